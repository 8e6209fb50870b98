"""The node's trainer started before its job is complete, so that its start-up overlaps the node's own work.

The node starts the trainer process as soon as it knows it has to train (after its checks and the "already
trained" check); the child imports torch, diffusers and peft while the node hands the UNet over and encodes the
photos. The node then announces two stages on a one-way control pipe (JSON bytes, nothing unpickled), each once
its file is complete in the job folder:

- ``unet``: ``unet.json`` (settings and UNet source) is written: the child reads the base UNet. On the CPU the
  node sends it at once, so the read (~5 GB of casts) runs while the VAE encodes; on a GPU only after the node
  has encoded and freed ComfyUI's models, so that the two never hold the GPU's memory at the same time.
- ``job``: ``job.json`` and ``data.safetensors`` are written (training/job.py): the child trains.

EOF on the control pipe (the node failed, was cancelled or is gone) ends the child with an error; the node stops
it in any case. `python -m training run JOB` does not use this: its job folder is complete when it starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

UNET_START_FILE = "unet.json"
UNET_START_FORMAT = "image_alchemy.unet_start/1"
STAGES = ("unet", "job")


def write_unet_start(job_dir: str | os.PathLike, settings, source) -> Path:
    """The ``unet`` stage's file: the settings (dtype and device) and the UNet source (atomic)."""
    path = Path(job_dir) / UNET_START_FILE
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(
        json.dumps({"format": UNET_START_FORMAT, "settings": json.loads(settings.to_json()), "unet": source.to_json()})
    )
    os.replace(tmp, path)
    return path


def stage_message(stage: str) -> bytes:
    if stage not in STAGES:
        raise ValueError(f"unknown trainer stage {stage!r}; known: {STAGES}")
    return json.dumps({"stage": stage}).encode()


def _wait_for(control, stage: str) -> None:
    try:
        raw = control.recv_bytes()
    except (EOFError, OSError):
        raise RuntimeError(f"the node stopped before the trainer's {stage!r} stage") from None
    got = json.loads(raw).get("stage")
    if got != stage:
        raise RuntimeError(f"trainer stage {got!r} came where {stage!r} was expected")


def warm_imports() -> None:
    """What the trainer imports on its way to the first step (most of its start-up on a slow CPU)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: F401
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: F401
    from diffusers.optimization import get_scheduler  # noqa: F401
    from diffusers.training_utils import cast_training_params  # noqa: F401
    from peft import LoraConfig  # noqa: F401

    from . import job  # noqa: F401


def run_staged(job_dir: str | os.PathLike, control, progress=None) -> Path:
    """The child's run: imports, then the ``unet`` stage (read the UNet), then the ``job`` stage (train)."""
    started = time.perf_counter()
    warm_imports()
    log.info("trainer libraries imported in %.1f s", time.perf_counter() - started)
    from .job import run_job
    from .settings import TrainSettings
    from .trainer import resolve_device, weight_dtype
    from .unet import UnetSource, load_unet

    _wait_for(control, "unet")
    start = json.loads((Path(job_dir) / UNET_START_FILE).read_text())
    if start.get("format") != UNET_START_FORMAT:
        raise ValueError(f"{job_dir}: {UNET_START_FILE} has format {start.get('format')!r}")
    settings = TrainSettings.from_dict(start["settings"])
    early = {
        "source": UnetSource.from_json(start["unet"]),
        "dtype": weight_dtype(settings),
        "device": resolve_device(settings),
    }
    read_at = time.perf_counter()
    early["unet"] = load_unet(early["source"], early["dtype"], early["device"])
    log.info("base UNet read in %.1f s", time.perf_counter() - read_at)
    waited = time.perf_counter()
    _wait_for(control, "job")
    log.info("job ready after a wait of %.1f s", time.perf_counter() - waited)

    def load(source, dtype, device):
        unet = early.pop("unet", None)  # held once: the trainer owns it from here
        if unet is not None and (source, dtype, device) == (early["source"], early["dtype"], early["device"]):
            return unet
        log.warning("the job names another UNet, dtype or device than the one read early: reading it again")
        del unet
        return load_unet(source, dtype, device)

    return run_job(job_dir, progress=progress, load=load)
