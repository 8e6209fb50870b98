"""The discrete noise schedule of the UNet families (SD1.5 and SDXL share it) for the trainer
(training/parametrisation.py), and Euler on the same schedule for the previews drawn during training
(training/preview.py)."""

from __future__ import annotations

from .settings import TrainSettings

# SD1.5's and SDXL's schedule (scaled-linear betas 0.00085 → 0.012, 1000 steps), as ComfyUI samples it.
DISCRETE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _schedule(settings: TrainSettings) -> dict:
    return dict(
        DISCRETE_SCHEDULE,
        prediction_type=settings.prediction_type,
        rescale_betas_zero_snr=settings.zero_terminal_snr,
    )


def noise_scheduler(settings: TrainSettings):
    """The training schedule; with ``zero_terminal_snr`` the betas are rescaled as diffusers'
    ``rescale_zero_terminal_snr`` (and ComfyUI's zsnr sampling) do."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_schedule(settings))


def preview_scheduler(settings: TrainSettings):
    """Euler on the training schedule (the trainer's betas, prediction type and zero-terminal-SNR rescale)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**_schedule(settings), timestep_spacing="trailing")
