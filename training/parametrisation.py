"""The training objective in the model's own parametrisation (docs/DESIGN.md §4.2): how clean latents x₀ and
noise ε become the denoiser's input at a drawn timestep, and what it is trained to predict.

- ``epsilon`` / ``v_prediction``: the discrete 1000-step scaled-linear schedule ComfyUI samples the UNet families
  with (``model_sampling`` = ModelSamplingDiscrete), optionally rescaled to zero terminal SNR:
  x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε; target ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀.
- ``flow``: rectified flow (ComfyUI's ModelSamplingDiscreteFlow / ModelSamplingFlux, diffusers'
  FlowMatchEulerDiscreteScheduler) with the family's timestep shift s: u ~ U(0, 1), σ = s·u / (1 + (s−1)·u),
  x_σ = (1−σ)·x₀ + σ·ε, target ε − x₀; the denoiser is given t = 1000·σ.

Every draw comes from the caller's CPU generator, so a seed gives the same run bit for bit.
"""

from __future__ import annotations

import torch

from .schedule import noise_scheduler

TIMESTEP_SCALE = 1000  # timesteps run over 0..1000 in every parametrisation (APT bins them the same way)


class DiscreteDiffusion:
    """ε or v prediction on the discrete schedule (training/schedule.py)."""

    def __init__(self, settings):
        self.scheduler = noise_scheduler(settings)
        self.prediction_type = settings.prediction_type

    def timesteps(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.scheduler.config.num_train_timesteps, (count,), generator=generator)

    def noised(self, latents, noise, timesteps) -> tuple[torch.Tensor, torch.Tensor]:
        latents = latents.float()
        if self.prediction_type == "epsilon":
            target = noise
        else:
            target = self.scheduler.get_velocity(latents, noise, timesteps)
        return self.scheduler.add_noise(latents, noise, timesteps), target


class FlowMatching:
    """Rectified flow with a timestep shift (``shift`` 1 = none; FLUX.1-dev 3.0 at 1024², SD3 3.0)."""

    def __init__(self, shift: float):
        if not shift > 0:
            raise ValueError(f"the flow shift must be > 0, got {shift}")
        self.shift = float(shift)

    def sigmas(self, u: torch.Tensor) -> torch.Tensor:
        return self.shift * u / (1 + (self.shift - 1) * u)

    def timesteps(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return self.sigmas(torch.rand(count, generator=generator, dtype=torch.float64)).float() * TIMESTEP_SCALE

    def noised(self, latents, noise, timesteps) -> tuple[torch.Tensor, torch.Tensor]:
        latents = latents.float()
        sigma = (timesteps.float() / TIMESTEP_SCALE).view(-1, *([1] * (latents.dim() - 1))).to(latents.device)
        return (1 - sigma) * latents + sigma * noise, noise - latents


def parametrisation(settings) -> DiscreteDiffusion | FlowMatching:
    if settings.prediction_type == "flow":
        return FlowMatching(settings.flow_shift)
    return DiscreteDiffusion(settings)
