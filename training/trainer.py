"""The LoRA training loop on cached latents and text embeddings (paper 001 §3.2; docs/DESIGN.md §4.2).

Split the way diffusers' examples are, but as functions: build (peft adapter) → train (loop) → export
(kohya state dict). No VAE or text encoder runs here: the caller encodes once and hands over tensors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .objective import Batch, Objective, draw_noise, noised
from .regularizers import per_sample_loss
from .settings import TrainSettings

log = logging.getLogger(__name__)

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # attention projections only (paper 001 §3.2)
TENSOR_NAMES = (
    "latents",
    "latents_flipped",
    "masks",
    "prompt_embeds",
    "pooled_prompt_embeds",
    "time_ids",
    "class_latents",
    "class_prompt_embeds",
    "class_pooled_prompt_embeds",
    "class_time_ids",
    "augmented_latents",
    "augmented_masks",
)


@dataclass
class TrainingData:
    """Encoded subject: latents already scaled for the UNet, SDXL text conditioning, optional loss masks.

    Text tensors have one row (shared prompt) or one row per image; masks are N×1×h×w at latent size.
    Prior preservation adds class-image latents and their conditioning (``class_*``); APT's augmentation adds
    ``augmented_latents`` (views per image, image-major: row i·views + k) and, with masks, ``augmented_masks``.
    """

    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    time_ids: torch.Tensor
    latents_flipped: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    class_latents: torch.Tensor | None = None
    class_prompt_embeds: torch.Tensor | None = None
    class_pooled_prompt_embeds: torch.Tensor | None = None
    class_time_ids: torch.Tensor | None = None
    augmented_latents: torch.Tensor | None = None
    augmented_masks: torch.Tensor | None = None

    def check(self, settings: TrainSettings) -> TrainingData:
        n = self.latents.shape[0]
        if self.latents.dim() != 4 or n < 1:
            raise ValueError(f"latents must be N×C×h×w with N ≥ 1, got {tuple(self.latents.shape)}")
        for name in ("prompt_embeds", "pooled_prompt_embeds", "time_ids"):
            rows = getattr(self, name).shape[0]
            if rows not in (1, n):
                raise ValueError(f"{name} has {rows} rows: expected 1 or one per image ({n})")
        if self.latents_flipped is not None and self.latents_flipped.shape != self.latents.shape:
            raise ValueError("latents_flipped must have the same shape as latents")
        if settings.flip and self.latents_flipped is None:
            raise ValueError("flip is on but the data has no latents_flipped: encode the flipped images too")
        if self.masks is not None and (self.masks.shape[0] != n or self.masks.shape[-2:] != self.latents.shape[-2:]):
            raise ValueError(
                f"masks {tuple(self.masks.shape)} must be N×1×h×w like latents {tuple(self.latents.shape)}"
            )
        if settings.prior_images:
            self._check_class_data()
        if settings.apt_augment:
            views = n * settings.apt_views
            if self.augmented_latents is None or self.augmented_latents.shape != (views, *self.latents.shape[1:]):
                got = None if self.augmented_latents is None else tuple(self.augmented_latents.shape)
                raise ValueError(
                    f"apt_augment is on: expected {views} augmented latents ({settings.apt_views} views "
                    f"per image) shaped like the latents, got {got}: encode the views too"
                )
            if self.masks is not None and (self.augmented_masks is None or self.augmented_masks.shape[0] != views):
                raise ValueError("apt_augment with masks needs augmented_masks, one per augmented view")
        return self

    def _check_class_data(self) -> None:
        names = ("class_latents", "class_prompt_embeds", "class_pooled_prompt_embeds", "class_time_ids")
        missing = [k for k in names if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"prior preservation is on but the data has no {missing}: generate and encode the class images"
            )
        m = self.class_latents.shape[0]
        if m < 1 or self.class_latents.shape[1:] != self.latents.shape[1:]:
            raise ValueError(
                f"class_latents {tuple(self.class_latents.shape)} must be M×C×h×w like the latents "
                f"{tuple(self.latents.shape)}: generate the class images at the training resolution"
            )
        for name in names[1:]:
            if getattr(self, name).shape[0] not in (1, m):
                raise ValueError(f"{name} must have 1 row or one per class image ({m})")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in TENSOR_NAMES if getattr(self, k) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TrainingData:
        return cls(**{k: tensors[k] for k in TENSOR_NAMES if k in tensors})


@dataclass
class TrainResult:
    kohya_state_dict: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. APT's final γ per bin


def resolve_device(settings: TrainSettings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def weight_dtype(settings: TrainSettings) -> torch.dtype:
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[settings.mixed_precision]


def lora_config(settings: TrainSettings):
    """peft LoraConfig on the UNet's attention projections; lora_alpha/r is the kohya scale (alpha/rank)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank, lora_alpha=settings.lora_alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS
    )


def build_lora_unet(unet, settings: TrainSettings, device: torch.device):
    """Freezes the base UNet (in the mixed-precision dtype), adds the LoRA, keeps LoRA parameters in fp32."""
    from diffusers.training_utils import cast_training_params

    unet.requires_grad_(False)
    unet.to(device)
    if weight_dtype(settings) != torch.float32:
        unet.to(dtype=weight_dtype(settings))
    torch.manual_seed(settings.seed)  # peft draws the LoRA init from the global generator
    unet.add_adapter(lora_config(settings))
    cast_training_params(unet, dtype=torch.float32)
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return unet


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
        denoise = (sample_weights.float() * per_sample_loss(model_pred, target, weights)).mean()
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


def noise_scheduler(settings: TrainSettings):
    """SDXL's training schedule (scaled-linear betas 0.00085 → 0.012, 1000 steps), as ComfyUI samples it; with
    ``zero_terminal_snr`` the betas are rescaled as diffusers' ``rescale_zero_terminal_snr`` (and ComfyUI's zsnr
    sampling) do."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=settings.prediction_type,
        rescale_betas_zero_snr=settings.zero_terminal_snr,
    )


class _BatchSampler:
    """Cycles through shuffled image indices (an epoch at a time) from a seeded CPU generator."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.order = n, generator, []

    def take(self, count: int) -> torch.Tensor:
        while len(self.order) < count:
            self.order += torch.randperm(self.n, generator=self.generator).tolist()
        picked, self.order = self.order[:count], self.order[count:]
        return torch.tensor(picked)


def _rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tensor.expand(len(index), *tensor.shape[1:]) if tensor.shape[0] == 1 else tensor[index]


def train(
    unet,
    data: TrainingData,
    settings: TrainSettings,
    progress: Callable[[dict], None] | None = None,
    *,
    checkpoint=None,
    resume: Path | None = None,
    preview=None,
) -> TrainResult:
    """Trains a LoRA on ``unet`` (a diffusers UNet2DConditionModel holding the base weights) and returns it
    in kohya format. All randomness comes from generators seeded with ``settings.seed`` and drawn on the CPU,
    so the same seed gives the same LoRA on the CPU, bit for bit. Every ``settings.save_every`` steps the resume
    state (training/checkpoint.py) is written beside ``checkpoint.path(step)``, then ``checkpoint.write(step,
    kohya_state_dict, losses)`` writes the LoRA there (training/job.py ``CheckpointWriter``): a checkpoint that
    exists has its state. ``resume``: such a state to continue from. ``preview`` (training/preview.py
    ``Previewer``): draws the sample previews it is due, into the step's event."""
    from diffusers.optimization import get_scheduler

    from . import checkpoint as ckpt

    settings.validate("training")
    data.check(settings)
    device = resolve_device(settings)
    dtype = weight_dtype(settings)
    unet = build_lora_unet(unet, settings, device)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    lr_schedule = get_scheduler(
        settings.lr_scheduler, optimizer, num_warmup_steps=settings.lr_warmup_steps, num_training_steps=settings.steps
    )
    scheduler = noise_scheduler(settings)
    scaler = torch.amp.GradScaler(device.type) if settings.mixed_precision == "fp16" else None
    generator = torch.Generator().manual_seed(settings.seed)
    sampler = _BatchSampler(data.latents.shape[0], generator)
    tensors = {k: v.to(device) for k, v in data.tensors().items()}
    weights_all = None
    if data.masks is not None:
        bg = settings.mask_background_weight
        weights_all = bg + (1.0 - bg) * tensors["masks"].float().clamp(0, 1)

    objective = Objective(unet, settings, tensors, generator, _BatchSampler)
    loop = ckpt.Loop(unet, optimizer, generator, sampler, objective, scaler)
    digest = ckpt.data_digest(data.tensors()) if resume is not None or settings.save_every else ""
    losses, first = [], 1
    if resume is not None:
        done, losses = ckpt.restore(resume, loop, lr_schedule, settings=settings, digest=digest)
        first = done + 1
        log.info("resuming at step %d of %d from %s", first, settings.steps, Path(resume).name)
    started = time.perf_counter()
    log.info("training loop starts: %d steps", settings.steps)  # bench/train_startup.py times start-up to here
    try:
        for step in range(first, settings.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            value, terms = 0.0, {}
            for _ in range(settings.gradient_accumulation):  # micro-batches; their mean is the step's loss
                loss, micro_terms = _micro_batch(
                    objective, tensors, sampler, generator, scheduler, weights_all, settings, dtype, device
                )
                _backward(loss / settings.gradient_accumulation, scaler)
                value += float(loss.detach()) / settings.gradient_accumulation
                for name, term in micro_terms.items():
                    terms[name] = terms.get(name, 0.0) + term / settings.gradient_accumulation
            _step(optimizer, scaler, params, settings)
            lr = lr_schedule.get_last_lr()[0]
            lr_schedule.step()
            if not math.isfinite(value):
                raise RuntimeError(
                    f"training diverged at step {step} (loss {value}): lower the learning rate "
                    f"or use bf16 instead of fp16"
                )
            losses.append(value)
            saved = None
            if (
                checkpoint is not None
                and settings.save_every
                and step % settings.save_every == 0
                and step < settings.steps
            ):  # the last step's weights are the LoRA itself
                ckpt.save_state(
                    ckpt.state_path(checkpoint.path(step)),
                    loop,
                    step=step,
                    losses=losses,
                    settings=settings,
                    digest=digest,
                )
                saved = checkpoint.write(step, export_kohya(unet, settings), list(losses))
            event = None
            if progress is not None:
                elapsed = time.perf_counter() - started
                event = {
                    "step": step,
                    "steps": settings.steps,
                    "loss": value,
                    "lr": lr,
                    "eta_s": elapsed / (step - first + 1) * (settings.steps - step),
                }
                if saved is not None:
                    event["checkpoint"] = saved.name
                if len(terms) > 1:
                    event["terms"] = terms
            if preview is not None and preview.due(step):
                drawn = preview.render(unet, step, dtype, device)
                if event is not None:
                    event["preview"] = drawn
            if event is not None:
                progress(event)
    finally:
        objective.close()
    return TrainResult(export_kohya(unet, settings), losses, time.perf_counter() - started, objective.metadata())


def _micro_batch(
    objective: Objective,
    tensors,
    sampler,
    generator,
    scheduler,
    weights_all,
    settings: TrainSettings,
    dtype: torch.dtype,
    device: torch.device,
):
    """One micro-batch: subject rows (flip, APT views), class rows with prior preservation, the loss and its terms."""
    index = sampler.take(settings.batch_size)
    latents = tensors["latents"][index.to(device)]
    if settings.flip:
        flip = (torch.rand(len(index), generator=generator) < 0.5).to(device)
        latents = torch.where(flip[:, None, None, None], tensors["latents_flipped"][index.to(device)], latents)
    noise, timesteps = draw_noise(latents.shape, scheduler, settings, generator, device)
    weights = None if weights_all is None else weights_all[index.to(device)]
    latents, weights = objective.augment(latents, weights, index, timesteps)
    noisy, target = noised(latents, noise, timesteps, scheduler, settings)
    text = (_rows(tensors[k], index).to(dtype) for k in ("prompt_embeds", "pooled_prompt_embeds", "time_ids"))
    batch = Batch(noisy, timesteps, target, *text, subject=len(index), weights=weights)
    if settings.prior_images:
        batch = batch.cat(objective.class_batch(len(index), scheduler, dtype, _rows))
    base = objective.base_pass(batch, dtype)
    model_pred = objective.forward(batch, dtype)
    return objective.loss(model_pred, batch, base, compute_loss)


def _backward(loss: torch.Tensor, scaler) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _step(optimizer, scaler, params, settings: TrainSettings) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()


def kohya_state_dict(unet) -> dict[str, torch.Tensor]:
    """The UNet's peft LoRA under kohya names: peft state dict → ``unet.``-prefixed → diffusers' conversion."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_kohya({f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()})


def export_kohya(unet, settings: TrainSettings) -> dict[str, torch.Tensor]:
    """The kohya state dict as saved: weights on the CPU in the save precision, alpha from the settings."""
    kohya = kohya_state_dict(unet)
    save_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[settings.save_precision]
    out = {}
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            out[key] = torch.tensor(settings.lora_alpha, dtype=torch.float32)
        else:
            out[key] = value.detach().to("cpu", save_dtype).contiguous()
    return out
