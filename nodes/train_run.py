"""TrainSubjectLoRA's run of the trainer process: the UNet handed over while the photos (and class images) are
encoded, the job written, the steps followed on the progress bar and the chart, and afterwards nothing left
behind but the LoRA and the checkpoints asked for."""

from __future__ import annotations

import glob
import logging
import shutil
import time
from pathlib import Path

import comfy.model_management
import comfy.utils

from ..training import job, staged
from ..training.lora_file import partial_path
from ..training.preview import read_previews
from ..training.settings import TrainSettings
from . import train_progress, unet_handover
from .train_encode import add_class_data, class_images_cached, encode, preview_conditioning

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
JOB_HASH_KEY = "image_alchemy.job_hash"


def hand_over_and_train(
    trainer, job_dir: Path, models, photos, settings: TrainSettings, device, *, config, model_hash, key, output,
    resume, file_name, unique_id
):  # fmt: skip
    """Hands the UNet over, encodes the photos (and class images), writes the job and follows the trainer's steps
    on the progress bar and the node's chart; returns the previews' grid."""
    model, clip, vae = models
    pixels, masks, time_ids = photos
    resolution = settings.resolution
    pbar = comfy.utils.ProgressBar(settings.steps)
    unet = unet_handover.unet_source(model, model.model.diffusion_model.state_dict(), config, model_hash)
    # On a GPU the trainer reads the UNet only once ComfyUI's models are freed; on the CPU ComfyUI keeps
    # them in RAM anyway, except while class images are drawn (sampling memory on top of the trainer's).
    read_early = device.type == "cpu" and not (
        settings.prior_images and not class_images_cached(settings, resolution, model_hash)
    )
    if read_early:
        staged.write_unet_start(job_dir, settings, unet)
        trainer.advance("unet")
    encoding = time.perf_counter()
    data = encode(model, clip, vae, pixels, masks, time_ids, settings)
    log.info(
        "%s: encoded %d photos at %d² in %.1f s",
        NODE,
        pixels.shape[0],
        resolution,
        time.perf_counter() - encoding,
    )
    if settings.prior_images:
        add_class_data(data, model, clip, vae, settings, resolution, model_hash)
    preview_cond = preview_conditioning(clip, settings)  # while CLIP is loaded
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
        output=output,
        resume=resume,
        extra_metadata={JOB_HASH_KEY: key, "ss_output_name": Path(file_name).stem},
        preview=preview_cond,
        preview_rgb=train_progress.rgb_factors(model),
    )
    trainer.advance("job")
    train_progress.send(unique_id, {"phase": "start", "steps": settings.steps})

    def on_step(event: dict) -> None:
        preview = event.pop("preview", None)
        # raises when the user cancels; a preview shows on the node as KSampler's does
        pbar.update_absolute(event["step"], settings.steps, train_progress.live_view(preview))
        train_progress.send(unique_id, {"phase": "step", **event, "preview": bool(preview)})

    trainer.wait(on_step, poll=comfy.model_management.throw_exception_if_processing_interrupted)
    grid = train_progress.preview_grid(model, vae, read_previews(job_dir / job.PREVIEW_DIR))
    return grid


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
