"""The LoRA training loop on cached latents and text embeddings (paper 001 §3.2; docs/DESIGN.md §4.2).

Split the way diffusers' examples are, but as functions: build (peft adapter) → train (loop) → export
(kohya state dict). No VAE or text encoder runs here: the caller encodes once and hands over tensors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import TrainingData, TrainResult
from .families import family_named
from .lora_file import export_kohya
from .objective import Batch, BatchSampler, Objective, conditioning_rows, draw_noise, noised
from .optimizers import build_optimizer
from .settings import TrainSettings

log = logging.getLogger(__name__)


def resolve_device(settings: TrainSettings) -> torch.device:
    """The settings' device; ``auto``: the first of cuda, xpu, mps that torch finds, else the CPU."""
    from .devices import pick

    return pick(settings.device)


def weight_dtype(settings: TrainSettings) -> torch.dtype:
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[settings.mixed_precision]


def lora_config(settings: TrainSettings):
    """peft LoraConfig on the family's attention projections (paper 001 §3.2); lora_alpha/r is the kohya scale
    (alpha/rank)."""
    from peft import LoraConfig

    targets = list(family_named(settings.model_family).lora_targets)
    return LoraConfig(
        r=settings.rank, lora_alpha=settings.lora_alpha, init_lora_weights="gaussian", target_modules=targets
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
    """Trains a LoRA on ``unet`` (the family's diffusers denoiser holding the base weights) and returns it
    in kohya format. All randomness comes from generators seeded with ``settings.seed`` and drawn on the CPU,
    so the same seed gives the same LoRA on the CPU, bit for bit. Every ``settings.save_every`` steps the resume
    state (training/checkpoint.py) is written beside ``checkpoint.path(step)``, then ``checkpoint.write(step,
    kohya_state_dict, losses)`` writes the LoRA there (training/job.py ``CheckpointWriter``): a checkpoint that
    exists has its state. ``resume``: such a state to continue from. ``preview`` (training/preview.py
    ``Previewer``): draws the sample previews it is due, into the step's event."""
    from . import checkpoint as ckpt

    settings.validate("training")
    data.check(settings)
    run = _Run.start(unet, data, settings)
    loop = ckpt.Loop(run.unet, run.optimizer, run.generator, run.sampler, run.objective, run.scaler)
    digest = ckpt.data_digest(data.tensors()) if resume is not None or settings.save_every else ""
    losses, first = [], 1
    if resume is not None:
        done, losses = ckpt.restore(resume, loop, run.lr_schedule, settings=settings, digest=digest)
        first = done + 1
        log.info("resuming at step %d of %d from %s", first, settings.steps, Path(resume).name)
    started = time.perf_counter()
    log.info("training loop starts: %d steps", settings.steps)  # bench/train_startup.py times start-up to here
    try:
        for step in range(first, settings.steps + 1):
            value, terms, lr = run.step(step)
            losses.append(value)
            saved = run.save_checkpoint(checkpoint, loop, step, losses, digest)
            event = None
            if progress is not None:
                eta = (time.perf_counter() - started) / (step - first + 1) * (settings.steps - step)
                event = _event(step, settings.steps, value, lr, eta, saved, terms)
            if preview is not None and preview.due(step):
                drawn = preview.render(run.unet, step, run.dtype, run.device)
                if event is not None:
                    event["preview"] = drawn
            if event is not None:
                progress(event)
    finally:
        run.objective.close()
    return TrainResult(
        export_kohya(run.unet, settings), losses, time.perf_counter() - started, run.objective.metadata()
    )


def _event(step: int, steps: int, loss: float, lr: float, eta_s: float, saved: Path | None, terms: dict) -> dict:
    """The progress event of one step (the node's progress bar, the CLI's log line)."""
    event = {"step": step, "steps": steps, "loss": loss, "lr": lr, "eta_s": eta_s}
    if saved is not None:
        event["checkpoint"] = saved.name
    if len(terms) > 1:
        event["terms"] = terms
    return event


@dataclass
class _Run:
    """What the steps of one training run share: the LoRA'd UNet, its optimizer, the seeded draws, the data."""

    unet: object
    settings: TrainSettings
    device: torch.device
    dtype: torch.dtype
    params: list
    optimizer: torch.optim.Optimizer
    lr_schedule: object
    scaler: object
    generator: torch.Generator
    sampler: BatchSampler
    tensors: dict
    weights_all: torch.Tensor | None
    objective: Objective

    @classmethod
    def start(cls, unet, data: TrainingData, settings: TrainSettings) -> _Run:
        from diffusers.optimization import get_scheduler

        device = resolve_device(settings)
        unet = build_lora_unet(unet, settings, device)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, settings)
        lr_schedule = get_scheduler(
            settings.lr_scheduler,
            optimizer,
            num_warmup_steps=settings.lr_warmup_steps,
            num_training_steps=settings.steps,
        )
        scaler = torch.amp.GradScaler(device.type) if settings.mixed_precision == "fp16" else None
        generator = torch.Generator().manual_seed(settings.seed)
        sampler = BatchSampler(data.latents.shape[0], generator)
        tensors = {k: v.to(device) for k, v in data.tensors().items()}
        weights_all = None
        if data.masks is not None:
            bg = settings.mask_background_weight
            weights_all = bg + (1.0 - bg) * tensors["masks"].float().clamp(0, 1)
        objective = Objective(unet, settings, tensors, generator)
        return cls(
            unet, settings, device, weight_dtype(settings), params, optimizer, lr_schedule, scaler, generator,
            sampler, tensors, weights_all, objective,
        )  # fmt: skip

    def save_checkpoint(self, checkpoint, loop, step: int, losses: list[float], digest: str) -> Path | None:
        """Every ``save_every`` steps but the last (its weights are the LoRA itself): the resume state, then the
        LoRA beside it; returns the LoRA's path."""
        from . import checkpoint as ckpt

        every, steps = self.settings.save_every, self.settings.steps
        if checkpoint is None or not every or step % every != 0 or step >= steps:
            return None
        state = ckpt.state_path(checkpoint.path(step))
        ckpt.save_state(state, loop, step=step, losses=losses, settings=self.settings, digest=digest)
        return checkpoint.write(step, export_kohya(self.unet, self.settings), list(losses))

    def micro_batch(self):
        """One micro-batch: subject rows (flip, APT views), class rows with prior preservation, the loss and its
        terms."""
        settings, objective, device = self.settings, self.objective, self.device
        index = self.sampler.take(settings.batch_size)
        latents = self.tensors["latents"][index.to(device)]
        if settings.flip:
            flip = (torch.rand(len(index), generator=self.generator) < 0.5).to(device)
            latents = torch.where(flip[:, None, None, None], self.tensors["latents_flipped"][index.to(device)], latents)
        noise, timesteps = draw_noise(latents.shape, objective.noising, settings, self.generator, device)
        weights = None if self.weights_all is None else self.weights_all[index.to(device)]
        latents, weights = objective.augment(latents, weights, index, timesteps)
        noisy, target = noised(latents, noise, timesteps, objective.noising)
        cond = conditioning_rows(self.tensors, objective.family.conditioning, index, self.dtype)
        batch = Batch(noisy, timesteps, target, cond, subject=len(index), weights=weights)
        if settings.prior_images:
            batch = batch.cat(objective.class_batch(len(index), self.dtype))
        base = objective.base_pass(batch, self.dtype)
        model_pred = objective.forward(batch, self.dtype)
        return objective.loss(model_pred, batch, base)

    def step(self, step: int) -> tuple[float, dict[str, float], float]:
        """One optimizer step over ``gradient_accumulation`` micro-batches: (mean loss, mean terms, its lr)."""
        settings = self.settings
        self.optimizer.zero_grad(set_to_none=True)
        value, terms = 0.0, {}
        for _ in range(settings.gradient_accumulation):  # micro-batches; their mean is the step's loss
            loss, micro_terms = self.micro_batch()
            _backward(loss / settings.gradient_accumulation, self.scaler)
            value += float(loss.detach()) / settings.gradient_accumulation
            for name, term in micro_terms.items():
                terms[name] = terms.get(name, 0.0) + term / settings.gradient_accumulation
        _step(self.optimizer, self.scaler, self.params, settings)
        # The step's size: Prodigy's is lr × its distance estimate d (the chart shows that, as kohya logs d·lr).
        lr = self.lr_schedule.get_last_lr()[0] * self.optimizer.param_groups[0].get("d", 1.0)
        self.lr_schedule.step()
        if not math.isfinite(value):
            raise RuntimeError(
                f"training diverged at step {step} (loss {value}): lower the learning rate or use bf16 instead of fp16"
            )
        return value, terms, lr


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
