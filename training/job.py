"""Job folders: what the node hands to the child process, and the run function both entry points share.

A job folder holds ``job.json`` (settings, paths, extra metadata) and ``data.safetensors`` (cached latents,
text embeddings, size/crop conditioning, optional masks). The base UNet is a separate safetensors file named in
``job.json`` with its key prefix and diffusers config: the checkpoint ComfyUI loaded, or an export (LDM layout,
config in its metadata) cached by fingerprint outside the job (training/unet.py ``UnetSource``).
User values travel only inside these files, never on a command line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import STEP_KEY, checkpoint_path
from .lora_file import lora_metadata, save_lora
from .preview import PreviewConditioning, Previewer
from .settings import TrainSettings
from .trainer import TrainingData, resolve_device, train, weight_dtype
from .unet import UnetSource, load_unet

log = logging.getLogger(__name__)

JOB_FORMAT = "image_alchemy.train_job/1"
JOB_FILE, DATA_FILE = "job.json", "data.safetensors"
PREVIEW_FILE, PREVIEW_DIR = "preview.safetensors", "previews"  # preview prompts' conditioning; drawn latents
JOB_KEY_METADATA = "image_alchemy.job_hash"  # the node's cache key (nodes/train_run.py)
PHOTO_CROPS_KEY = "image_alchemy.photo_crops"  # per photo [height, width, crop top, crop left, bucket h, bucket w]


def write_job(
    job_dir: str | os.PathLike,
    settings: TrainSettings,
    data: TrainingData,
    *,
    unet_path: str | os.PathLike | UnetSource,
    output: str | os.PathLike,
    extra_metadata: dict[str, str] | None = None,
    resume: str | os.PathLike | None = None,
    preview: PreviewConditioning | None = None,
    preview_rgb: dict | None = None,
) -> Path:
    """Writes a job folder (each file atomically) and returns it. ``unet_path``: an export written by
    ``save_ldm_unet``, or a ``UnetSource`` (any safetensors file holding the UNet). ``resume``: the resume
    state (training/checkpoint.py) to continue from. ``preview``: the preview prompts' conditioning (outside the
    data file, which decides the LoRA); ``preview_rgb``: the model's latent→RGB factors for the live view."""
    unet = unet_path.to_json() if isinstance(unet_path, UnetSource) else str(unet_path)
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / (DATA_FILE + ".partial")
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in data.tensors().items()}, str(tmp))
    os.replace(tmp, job_dir / DATA_FILE)
    if preview is not None:
        tmp = job_dir / (PREVIEW_FILE + ".partial")
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in preview.tensors().items()}, str(tmp))
        os.replace(tmp, job_dir / PREVIEW_FILE)
    job = {
        "format": JOB_FORMAT,
        "settings": json.loads(settings.to_json()),
        "unet": unet,
        "output": str(output),
        "metadata": dict(extra_metadata or {}),
        "resume": None if resume is None else str(resume),
        "preview_rgb": preview_rgb,
    }
    tmp = job_dir / (JOB_FILE + ".partial")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, job_dir / JOB_FILE)
    return job_dir


def read_job(job_dir: str | os.PathLike) -> tuple[dict, TrainSettings, TrainingData]:
    job_dir = Path(job_dir)
    try:
        job = json.loads((job_dir / JOB_FILE).read_text())
    except FileNotFoundError:
        raise ValueError(f"{job_dir} is not a training job folder (no {JOB_FILE})") from None
    if job.get("format") != JOB_FORMAT:
        raise ValueError(f"{job_dir / JOB_FILE}: format {job.get('format')!r}, expected {JOB_FORMAT!r}")
    settings = TrainSettings.from_dict(job["settings"]).validate("training job")
    data = TrainingData.from_tensors(load_file(str(job_dir / DATA_FILE))).check(settings)
    return job, settings, data


def finish(
    result,
    settings: TrainSettings,
    data: TrainingData,
    *,
    output: str | os.PathLike,
    base_model_hash: str,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Writes the trained LoRA with its metadata (atomic)."""
    return _save(
        Path(output),
        result.kohya_state_dict,
        result.losses,
        settings,
        data,
        base_model_hash,
        {**(extra_metadata or {}), **result.metadata},
    )


def _save(output: Path, state_dict, losses, settings, data, base_model_hash, extra) -> Path:
    h, w = data.latents.shape[-2:]
    meta = lora_metadata(
        settings,
        base_model_hash=base_model_hash,
        num_images=data.latents.shape[0],
        resolution=(w * 8, h * 8),
        losses=losses,
        output_name=output.stem,
        extra={STEP_KEY: str(len(losses)), **_photo_crops(data), **extra},
    )
    return save_lora(output, state_dict, meta)


def _photo_crops(data) -> dict[str, str]:
    """Per photo: its own size, the crop's corner in the resized photo, the bucket."""
    return {} if data.photo_crops is None else {PHOTO_CROPS_KEY: json.dumps(data.photo_crops.int().tolist())}


class CheckpointWriter:
    """``train``'s checkpoints: ``<output>-step<N>.safetensors`` with the final file's metadata, its step and the
    losses so far (no job key: a checkpoint is not the finished LoRA of these inputs)."""

    def __init__(
        self,
        settings: TrainSettings,
        data: TrainingData,
        *,
        output: str | os.PathLike,
        base_model_hash: str,
        extra_metadata: dict[str, str] | None = None,
    ):
        self.settings, self.data, self.output, self.base_model_hash = settings, data, Path(output), base_model_hash
        self.extra = {k: v for k, v in (extra_metadata or {}).items() if k != JOB_KEY_METADATA}

    def path(self, step: int) -> Path:
        return checkpoint_path(self.output, step)

    def write(self, step: int, state_dict: dict, losses: list[float]) -> Path:
        path = self.path(step)
        log.info("checkpoint at step %d: %s", step, path.name)
        return _save(
            path,
            state_dict,
            losses,
            self.settings,
            self.data,
            self.base_model_hash,
            {**self.extra, "ss_output_name": path.stem},
        )


def _previewer(job_dir: Path, settings: TrainSettings, data: TrainingData, rgb: dict | None) -> Previewer | None:
    path = job_dir / PREVIEW_FILE
    if not settings.preview_every or not path.exists():
        return None
    (job_dir / PREVIEW_DIR).mkdir(exist_ok=True)
    rgb = rgb or {}
    return Previewer(
        settings,
        PreviewConditioning.from_tensors(load_file(str(path))),
        tuple(data.latents.shape[1:]),
        job_dir / PREVIEW_DIR,
        rgb.get("factors"),
        rgb.get("bias"),
    )


def run_job(
    job_dir: str | os.PathLike, progress: Callable[[dict], None] | None = None, load: Callable = load_unet
) -> Path:
    """Trains the job in ``job_dir`` and writes the LoRA it names. The one function behind `python -m
    training run` and the node's child process. ``load(source, dtype, device)`` gives the base UNet (the node's
    trainer has read it already: training/staged.py)."""
    job, settings, data = read_job(job_dir)
    device = resolve_device(settings)
    if settings.device == "auto":
        log.info("training on %s", device)
    source = UnetSource.from_json(job["unet"])
    unet = load(source, weight_dtype(settings), device)  # straight to the device, once
    writer = CheckpointWriter(
        settings, data, output=job["output"], base_model_hash=source.model_hash, extra_metadata=job.get("metadata")
    )
    result = train(
        unet,
        data,
        settings,
        progress,
        checkpoint=writer,
        resume=Path(job["resume"]) if job.get("resume") else None,
        preview=_previewer(Path(job_dir), settings, data, job.get("preview_rgb")),
    )
    return finish(
        result,
        settings,
        data,
        output=job["output"],
        base_model_hash=source.model_hash,
        extra_metadata=job.get("metadata"),
    )
