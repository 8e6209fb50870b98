"""TrainSubjectLoRA's run of the trainer process: the UNet handed over while the photos (and class images) are
encoded, the job written, the steps followed on the progress bar and the chart, and afterwards nothing left
behind but the LoRA and the checkpoints asked for."""

from __future__ import annotations

import glob
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.utils
import torch

from ..training import job, staged
from ..training.lora_file import partial_path
from ..training.preview import read_previews
from ..training.settings import TrainSettings
from ..training.unet import UnetSource
from . import train_progress, unet_handover
from .train_encode import Photos, add_class_data, class_images_cached, encode, preview_conditioning

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
JOB_HASH_KEY = "image_alchemy.job_hash"


@dataclass
class TrainingRequest:
    """What TrainSubjectLoRA decided before training: the wired models, the prepared photos, the checked
    settings and device, the base model's identity (diffusers config, fingerprint), the run's cache key, where
    the LoRA goes and the resume state to continue from."""

    model: object  # ComfyUI MODEL, CLIP, VAE
    clip: object
    vae: object
    photos: Photos
    settings: TrainSettings
    device: torch.device
    unet_config: dict
    model_hash: str
    key: str
    output: Path
    resume: Path | None
    unique_id: str

    def unet_source(self) -> UnetSource:
        """Where the trainer reads the base weights (nodes/unet_handover.py)."""
        state_dict = self.model.model.diffusion_model.state_dict()
        return unet_handover.unet_source(
            self.model, state_dict, self.unet_config, self.model_hash, self.settings.model_family
        )


def hand_over_and_train(trainer, job_dir: Path, request: TrainingRequest):
    """Hands the UNet over, encodes the photos (and class images), writes the job and follows the trainer's steps
    on the progress bar and the node's chart; returns the previews' grid."""
    r, settings = request, request.settings
    resolution = settings.training_resolution
    pbar = comfy.utils.ProgressBar(settings.steps)
    unet = r.unet_source()
    # On a GPU the trainer reads the UNet only once ComfyUI's models are freed; on the CPU ComfyUI keeps
    # them in RAM anyway, except while class images are drawn (sampling memory on top of the trainer's).
    read_early = r.device.type == "cpu" and not (
        settings.prior_images and not class_images_cached(settings, resolution, r.model_hash)
    )
    if read_early:
        staged.write_unet_start(job_dir, settings, unet)
        trainer.advance("unet")
    encoding = time.perf_counter()
    data = encode(r.model, r.clip, r.vae, r.photos, settings)
    log.info(
        "%s: encoded %d photos at %d² in %.1f s",
        NODE,
        r.photos.pixels.shape[0],
        resolution,
        time.perf_counter() - encoding,
    )
    if settings.prior_images:
        add_class_data(data, r.model, r.clip, r.vae, settings, resolution, r.model_hash)
    preview_cond = preview_conditioning(r.clip, settings)  # while CLIP is loaded
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    if not read_early:
        staged.write_unet_start(job_dir, settings, unet)
        trainer.advance("unet")
    job.write_job(
        job_dir,
        settings,
        data,
        unet_path=unet,
        output=r.output,
        resume=r.resume,
        extra_metadata={JOB_HASH_KEY: r.key, "ss_output_name": r.output.stem},
        preview=preview_cond,
        preview_rgb=train_progress.rgb_factors(r.model),
    )
    trainer.advance("job")
    train_progress.send(r.unique_id, {"phase": "start", "steps": settings.steps})

    def on_step(event: dict) -> None:
        preview = event.pop("preview", None)
        # raises when the user cancels; a preview shows on the node as KSampler's does
        pbar.update_absolute(event["step"], settings.steps, train_progress.live_view(preview))
        train_progress.send(r.unique_id, {"phase": "step", **event, "preview": bool(preview)})

    trainer.wait(on_step, poll=comfy.model_management.throw_exception_if_processing_interrupted)
    return train_progress.preview_grid(r.model, r.vae, read_previews(job_dir / job.PREVIEW_DIR))


def clean_up(trainer, output: Path, job_dir: Path) -> None:
    """The child stopped, no partial file left, no resume state without its LoRA, the job folder removed."""
    if trainer is not None:
        trainer.stop()
    partial_path(output).unlink(missing_ok=True)
    for partial in output.parent.glob(glob.escape(output.stem) + "-step*.partial"):
        partial.unlink(missing_ok=True)
    for state in output.parent.glob(glob.escape(output.stem) + "-step*.trainstate"):
        if not state.with_suffix(".safetensors").exists():  # cancelled between the state and its LoRA
            state.unlink(missing_ok=True)
    shutil.rmtree(job_dir, ignore_errors=True)
