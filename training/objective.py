"""The per-step objective with the drift-free options: prior preservation, drift penalty, APT (docs/DESIGN.md §4.3).

``Objective`` holds what lives across steps (the model family and its parametrisation, the overfitting
indicator, feature hooks, the class-image order) and adds to a step: APT's augmented views, the class-image half
of the batch, the base-model pass (same denoiser, adapter off) and the extra loss terms. The noising, the batch
order and the loss itself live here too; the trainer's loop (training/trainer.py) draws a batch and calls into
this module. With every option off it draws nothing from the generator and adds nothing, so the paper-001
default trains exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import regularizers as reg
from .families import family_named
from .lora_hooks import FeatureProbe, adapter_disabled, lora_factors, lora_parameters
from .parametrisation import parametrisation
from .settings import TrainSettings


def draw_noise(
    shape: torch.Size, noising, settings: TrainSettings, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (with the noise offset: one extra value per sample and channel) and timesteps for ``shape``, drawn
    on the CPU from ``generator``. Subject and class rows both come through here."""
    noise = torch.randn(shape, generator=generator).to(device)
    if settings.noise_offset:
        noise = noise + settings.noise_offset * torch.randn(tuple(shape[:2]) + (1, 1), generator=generator).to(device)
    return noise, noising.timesteps(shape[0], generator).to(device)


def noised(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, noising):
    """The denoiser's input at ``timesteps`` and the training target, in the model's parametrisation
    (training/parametrisation.py)."""
    return noising.noised(latents, noise, timesteps)


def compute_loss(
    model_pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    **extra_terms: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Denoising MSE, weighted per latent pixel when masks are given, plus any extra regularizer terms
    (each already scaled by its λ). ``sample_weights`` (APT's 1 − γ_b) scales each row's own mean error.
    Returns the total and the float value of every term for logging."""
    error = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    if sample_weights is not None:
        denoise = (sample_weights.float() * reg.per_sample_loss(model_pred, target, weights)).mean()
    elif weights is None:
        denoise = error.mean()
    else:
        weights = weights.expand_as(error)
        denoise = (error * weights).sum() / weights.sum().clamp_min(1e-8)
    total = denoise
    terms = {"denoise": float(denoise.detach())}
    for name, term in extra_terms.items():
        total = total + term
        terms[name] = float(term.detach())
    return total, terms


class BatchSampler:
    """Cycles through shuffled image indices (an epoch at a time) from a seeded CPU generator."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.order = n, generator, []

    def take(self, count: int) -> torch.Tensor:
        while len(self.order) < count:
            self.order += torch.randperm(self.n, generator=self.generator).tolist()
        picked, self.order = self.order[:count], self.order[count:]
        return torch.tensor(picked)


def rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows of ``index``: a one-row tensor (one prompt for every image) is shared."""
    return tensor.expand(len(index), *tensor.shape[1:]) if tensor.shape[0] == 1 else tensor[index]


def conditioning_rows(tensors: dict, names, index: torch.Tensor, dtype: torch.dtype, prefix: str = "") -> dict:
    return {name: rows(tensors[prefix + name], index).to(dtype) for name in names}


@dataclass
class Batch:
    """One step's denoiser input; the first ``subject`` rows are subject images, the rest class images.
    ``cond``: the family's conditioning tensors by name (training/families)."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    cond: dict[str, torch.Tensor]
    subject: int
    weights: torch.Tensor | None = None  # loss weights of the subject rows (masks)

    def cat(self, other: Batch) -> Batch:
        return Batch(
            *(torch.cat([getattr(self, k), getattr(other, k)]) for k in ("noisy", "timesteps", "target")),
            {k: torch.cat([v, other.cond[k]]) for k, v in self.cond.items()},
            subject=self.subject,
            weights=self.weights,
        )


@dataclass
class BasePass:
    loss: torch.Tensor  # per subject row
    stats: list = field(default_factory=list)
    maps: list = field(default_factory=list)


class Objective:
    def __init__(self, unet, settings: TrainSettings, tensors: dict[str, torch.Tensor], generator: torch.Generator):
        self.unet, self.settings, self.tensors, self.generator = unet, settings, tensors, generator
        self.family = family_named(settings.model_family)
        self.noising = parametrisation(settings)
        self.indicator = reg.OverfitIndicator() if settings.apt_indicator else None
        self.probe = (
            FeatureProbe(unet, settings.apt_features, settings.apt_attention)
            if settings.apt_features or settings.apt_attention
            else None
        )
        self.class_sampler = (
            BatchSampler(tensors["class_latents"].shape[0], generator) if settings.prior_images else None
        )

    def metadata(self) -> dict[str, str]:
        if self.indicator is None:
            return {}
        import json

        return {"image_alchemy.apt_state": json.dumps(self.indicator.state())}

    def close(self) -> None:
        if self.probe is not None:
            self.probe.remove()

    def augment(
        self, latents: torch.Tensor, weights: torch.Tensor | None, index: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """APT: each sample becomes one of its pre-encoded views with probability clip(γ_b, 0, p_max)."""
        if not self.settings.apt_augment:
            return latents, weights
        views = self.settings.apt_views
        p = self.indicator.augment_probability(timesteps.cpu(), self.settings.apt_augment_p_max)
        chosen = torch.rand(len(index), generator=self.generator) < p
        view = index * views + torch.randint(0, views, (len(index),), generator=self.generator)
        if not bool(chosen.any()):
            return latents, weights
        device = latents.device
        pick = chosen.to(device)[:, None, None, None]
        latents = torch.where(pick, self.tensors["augmented_latents"][view.to(device)], latents)
        if weights is not None and "augmented_masks" in self.tensors:
            bg = self.settings.mask_background_weight
            view_weights = bg + (1.0 - bg) * self.tensors["augmented_masks"][view.to(device)].float().clamp(0, 1)
            weights = torch.where(pick, view_weights, weights)
        return latents, weights

    def class_batch(self, count: int, dtype: torch.dtype) -> Batch:
        """Prior preservation: ``count`` class images noised like the subject ones."""
        device = self.tensors["class_latents"].device
        index = self.class_sampler.take(count)
        latents = self.tensors["class_latents"][index.to(device)].float()
        noise, timesteps = draw_noise(latents.shape, self.noising, self.settings, self.generator, device)
        noisy, target = noised(latents, noise, timesteps, self.noising)
        cond = conditioning_rows(self.tensors, self.family.conditioning, index, dtype, prefix="class_")
        return Batch(noisy, timesteps, target, cond, subject=0)

    def base_pass(self, batch: Batch, dtype: torch.dtype) -> BasePass | None:
        """The base model (adapter off, no gradients) on the subject rows: L_pre, feature stats, attention maps."""
        if not self.settings.base_pass:
            return None
        n = batch.subject
        with torch.no_grad(), adapter_disabled(self.unet), self._record() as probe:
            with torch.autocast(batch.noisy.device.type, dtype=dtype, enabled=dtype != torch.float32):
                cond = {k: v[:n] for k, v in batch.cond.items()}
                pred = self.family.predict(self.unet, batch.noisy[:n].to(dtype), batch.timesteps[:n], cond)
        loss = reg.per_sample_loss(pred, batch.target[:n], batch.weights)
        return BasePass(loss, *(probe.rows(n) if probe is not None else ([], [])))

    def _record(self):
        import contextlib

        return self.probe.record() if self.probe is not None else contextlib.nullcontext(None)

    def forward(self, batch: Batch, dtype: torch.dtype) -> torch.Tensor:
        """The fine-tuned forward on the whole batch (hooks recording when APT needs them)."""
        with torch.autocast(batch.noisy.device.type, dtype=dtype, enabled=dtype != torch.float32), self._record():
            return self.family.predict(self.unet, batch.noisy.to(dtype), batch.timesteps, batch.cond)

    def loss(self, model_pred: torch.Tensor, batch: Batch, base: BasePass | None):
        """Total loss and its terms; updates the overfitting indicator with this step's losses."""
        s, n = self.settings, batch.subject
        pred, target = model_pred[:n], batch.target[:n]
        extra = {}
        if s.prior_images:
            extra["prior"] = s.prior_weight * F.mse_loss(model_pred[n:].float(), batch.target[n:].float())
        if s.drift_penalty == "delta":
            extra["drift"] = s.drift_lambda * reg.drift_penalty_delta(lora_factors(self.unet))
        elif s.drift_penalty == "params":
            extra["drift"] = s.drift_lambda * reg.drift_penalty_params(lora_parameters(self.unet))
        if self.probe is not None:
            stats, maps = self.probe.rows(n)
            if s.apt_features:
                extra["features"] = s.apt_feature_weight * reg.feature_stats_loss(stats, base.stats)
            if s.apt_attention:
                extra["attention"] = s.apt_attention_weight * reg.attention_alignment_loss(maps, base.maps)
        sample_weights = None
        if s.apt_loss_weighting:
            sample_weights = self.indicator.loss_weights(batch.timesteps[:n].cpu()).to(pred.device)
        total, terms = compute_loss(pred, target, batch.weights, sample_weights=sample_weights, **extra)
        if self.indicator is not None:
            self.indicator.update(
                batch.timesteps[:n], base.loss, reg.per_sample_loss(pred.detach(), target, batch.weights)
            )
        return total, terms
