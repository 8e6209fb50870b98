"""Sample previews while training: every ``preview_every`` steps the LoRA as it is draws the training prompt and
the user's prompt from a fixed seed in a few Euler steps (the same UNet, no gradients, its own generator: the
training's random stream and so the LoRA's bytes do not change). Each preview's latents are saved for the node
to decode with the wired VAE into the final grid; a latent→RGB projection (the model's preview factors, as
ComfyUI's KSampler preview uses) gives the live view without a VAE in the trainer.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .families import family_named
from .schedule import preview_scheduler

log = logging.getLogger(__name__)

PREVIEW_CFG = 5.0
PREVIEW_FILE = "preview-{step:06d}.safetensors"


@dataclass
class PreviewConditioning:
    """Text conditioning of the preview prompts (P rows) and of the empty negative prompt (1 row)."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None
    negative_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor | None  # None both for families without pooled text (SD1.5)

    NAMES = ("prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds")

    @classmethod
    def from_rows(cls, rows: list[dict[str, torch.Tensor]], negative: dict[str, torch.Tensor]):
        """From each preview prompt's and the negative prompt's text conditioning (a family's names)."""
        pooled = "pooled_prompt_embeds" in negative
        return cls(
            torch.cat([r["prompt_embeds"] for r in rows]),
            torch.cat([r["pooled_prompt_embeds"] for r in rows]) if pooled else None,
            negative["prompt_embeds"],
            negative["pooled_prompt_embeds"] if pooled else None,
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"preview_{k}": getattr(self, k).contiguous() for k in self.NAMES if getattr(self, k) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PreviewConditioning | None:
        if "preview_prompt_embeds" not in tensors:
            return None
        return cls(**{k: tensors.get(f"preview_{k}") for k in cls.NAMES})

    def guided(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """Negative rows then prompt rows (classifier-free guidance in one batch), by conditioning name."""
        p = self.prompt_embeds.shape[0]
        out = {"prompt_embeds": torch.cat([self.negative_prompt_embeds.expand(p, -1, -1), self.prompt_embeds])}
        if self.pooled_prompt_embeds is not None:
            pooled = torch.cat([self.negative_pooled_prompt_embeds.expand(p, -1), self.pooled_prompt_embeds])
            out["pooled_prompt_embeds"] = pooled
        return {k: v.to(device, dtype) for k, v in out.items()}


class Previewer:
    """Draws previews into ``folder`` (one latents file per preview step) and returns the live view."""

    def __init__(
        self,
        settings,
        cond: PreviewConditioning,
        latent_shape: tuple[int, int, int],
        folder: Path,
        rgb_factors: list | None = None,
        rgb_bias: list | None = None,
    ):
        self.settings, self.cond, self.latent_shape, self.folder = settings, cond, latent_shape, Path(folder)
        self.rgb_factors = None if rgb_factors is None else torch.tensor(rgb_factors, dtype=torch.float32)
        self.rgb_bias = None if rgb_bias is None else torch.tensor(rgb_bias, dtype=torch.float32)

    def due(self, step: int) -> bool:
        every = self.settings.preview_every
        return bool(every) and (step % every == 0 or step == self.settings.steps)

    @torch.no_grad()
    def render(self, unet, step: int, dtype: torch.dtype, device: torch.device) -> dict:
        """Samples the prompts, saves their latents (atomic) and returns the event's preview fields."""
        latents = sample(unet, self.settings, self.cond, self.latent_shape, dtype, device)
        path = self.folder / PREVIEW_FILE.format(step=step)
        tmp = path.with_name(path.name + ".partial")
        save_file({"latents": latents.cpu().contiguous()}, str(tmp))
        os.replace(tmp, path)
        event = {"step": step, "file": path.name}
        if self.rgb_factors is not None:
            rgb = latent_rgb(latents, self.rgb_factors, self.rgb_bias)
            event.update(height=rgb.shape[0], width=rgb.shape[1], rgb=base64.b64encode(rgb.numpy().tobytes()).decode())
        return event


def sample(
    unet, settings, cond: PreviewConditioning, latent_shape, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """P×C×h×w latents of the preview prompts (classifier-free guidance against the empty prompt)."""
    scheduler = preview_scheduler(settings)
    scheduler.set_timesteps(settings.preview_steps, device=device)
    p = cond.prompt_embeds.shape[0]
    generator = torch.Generator().manual_seed(settings.seed)  # the same start noise at every preview
    x = (torch.randn((p, *latent_shape), generator=generator) * scheduler.init_noise_sigma).to(device)
    family = family_named(settings.model_family)
    h, w = latent_shape[-2] * 8, latent_shape[-1] * 8
    size = {k: v.to(device, dtype) for k, v in family.square_size_conditioning(h, w, 2 * p).items()}
    guided = {**cond.guided(dtype, device), **size}
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([x, x]), t).to(dtype)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = family.predict(unet, model_in, t, guided).float()
        uncond, text = pred.chunk(2)
        x = scheduler.step(uncond + PREVIEW_CFG * (text - uncond), t, x, return_dict=False)[0]
    return x.float()


def latent_rgb(latents: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """P latents side by side → h×(P·w)×3 uint8 through the linear latent→RGB projection."""
    x = torch.cat(list(latents.float().cpu()), dim=-1)  # C×h×(P·w)
    rgb = torch.nn.functional.linear(x.movedim(0, -1), factors.t(), bias)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)


def read_previews(folder: Path) -> list[tuple[int, torch.Tensor]]:
    """The saved previews in step order: (step, P×C×h×w latents)."""
    out = []
    for path in sorted(Path(folder).glob("preview-*.safetensors")):
        out.append((int(path.stem.split("-")[1]), load_file(str(path))["latents"]))
    return out
