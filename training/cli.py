"""Command line: `python -m training run JOB_DIR` and `python -m training fit --model … --images … --out …`.

Progress goes to stdout, one JSON object per line: {"step", "steps", "loss", "lr", "eta_s"} per step, then
{"done": true, "output": PATH, "seconds": S}, or {"error": MESSAGE} (exit status 1). Logs go to stderr.
``run_child`` is the same run inside the node's trainer process (training/child.py), events on a pipe.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from .settings import (DRIFT_PENALTIES, DRIFT_WEIGHT_DEFAULTS, LR_SCHEDULERS, MIXED_PRECISION, PREDICTION_TYPES,
                       SAVE_PRECISION, TrainSettings)

log = logging.getLogger("training")

LOG_FILE = "trainer.log"  # in the job folder: the node's trainer writes its logs here

_SETTING_HELP = {
    "rank": "LoRA rank r",
    "alpha": "LoRA alpha; the update is scaled by alpha/rank (default: = rank, the paper's scale 1)",
    "learning_rate": "AdamW learning rate",
    "lr_scheduler": f"learning-rate schedule, one of {LR_SCHEDULERS}",
    "lr_warmup_steps": "warm-up steps of the schedule",
    "steps": "optimizer steps",
    "batch_size": "images per micro-batch",
    "gradient_accumulation": "micro-batches per optimizer step (samples per step = batch size × this)",
    "seed": "seed of the LoRA init, noise, timesteps and batch order",
    "mixed_precision": f"{MIXED_PRECISION}: base weights and autocast dtype; bf16/fp16 need a GPU",
    "gradient_checkpointing": "recompute activations in the backward pass (less memory, ~30%% slower)",
    "flip": "horizontal-flip augmentation (p=0.5), from pre-encoded flipped images",
    "noise_offset": "noise offset (0.05–0.1 helps very dark/bright subjects)",
    "mask_background_weight": "loss weight outside the subject mask, when masks are given",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "prediction_type": f"{PREDICTION_TYPES}: what the base model predicts",
    "zero_terminal_snr": "rescale the noise schedule to zero terminal SNR (for zsnr / NoobAI-style v-pred models)",
    "save_precision": f"{SAVE_PRECISION}: dtype of the saved LoRA weights",
    "device": "auto | cpu | cuda | cuda:N (auto: cuda when available)",
    "prior_images": "prior preservation: class images ('a photo of <class>') drawn by the base model; 0 = off",
    "prior_weight": "weight of the class-image loss (prior preservation)",
    "drift_penalty": "paper 002 drift penalty: delta = λ·Σ‖ΔW‖²_F over LoRA layers, params = λ·Σ‖p‖²; off",
    "drift_weight": "λ of the drift penalty (default: " + ", ".join(f"{k} {v:g}" for k, v in
                                                                 DRIFT_WEIGHT_DEFAULTS.items()) + ")",
    "apt_augment": "APT adaptive augmentation (zoom-out 1–3×, rotation ±15°, p = clip(γ_b, 0, p_max))",
    "apt_augment_p_max": "APT: largest augmentation probability p_max",
    "apt_views": "APT: augmented views per image, encoded once before training",
    "apt_loss_weighting": "APT adaptive loss weight 1 − γ_b per timestep bin",
    "apt_features": "APT representation stabilization (feature mean/std vs the base model)",
    "apt_feature_weight": "weight of the representation-stabilization loss",
    "apt_attention": "APT attention alignment (cross-attention maps vs the base model)",
    "apt_attention_weight": "weight of the attention-alignment loss",
}


_CHOICES = {"mixed_precision": MIXED_PRECISION, "save_precision": SAVE_PRECISION, "lr_scheduler": LR_SCHEDULERS,
            "prediction_type": PREDICTION_TYPES, "drift_penalty": DRIFT_PENALTIES}


def _add_settings(parser: argparse.ArgumentParser) -> None:
    defaults = TrainSettings()
    for f in dataclasses.fields(TrainSettings):
        if f.name in ("token", "class_word"):
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=_SETTING_HELP[f.name])
        else:
            kind = {"alpha": float, "drift_weight": float}.get(f.name, type(default))
            parser.add_argument(flag, type=kind, default=default, choices=_CHOICES.get(f.name),
                                help=_SETTING_HELP[f.name])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the job folder written by the TrainSubjectLoRA node")
    run.add_argument("job_dir", help="job folder (job.json + data.safetensors)")
    run.add_argument("--stop-on-stdin-eof", action="store_true",
                     help="exit when stdin closes (for a parent process that keeps stdin open as a lifeline)")
    fit = sub.add_parser("fit", help="encode a folder of photos with diffusers, then train",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("--model", required=True, help="diffusers SDXL folder or single-file .safetensors checkpoint")
    fit.add_argument("--config", help="for a single file offline: diffusers folder holding the component configs")
    fit.add_argument("--images", required=True, help="folder of 4–5 subject photos (png/jpg/webp)")
    fit.add_argument("--token", required=True, help="rare placeholder token, e.g. 'iklan'")
    fit.add_argument("--class-word", required=True, help="the subject's class, e.g. 'dog'")
    fit.add_argument("--out", required=True, help="LoRA file to write (.safetensors)")
    fit.add_argument("--resolution", type=int, default=1024, help="training size in pixels (multiple of 8)")
    fit.add_argument("--class-dir", help="prior preservation: folder caching the generated class images (reused "
                                         "when model, prompt, size and seed match; default: not cached)")
    fit.add_argument("--class-steps", type=int, default=30, help="sampling steps per class image")
    _add_settings(fit)
    args = parser.parse_args(argv)
    if args.command == "fit":
        if not args.out.endswith(".safetensors"):
            parser.error("--out must end with .safetensors")
        if args.resolution < 64 or args.resolution % 8:
            parser.error("--resolution must be a multiple of 8, at least 64")
        if not os.path.isdir(args.images):
            parser.error(f"--images {args.images} is not a folder")
        if args.mixed_precision != "no" and args.device == "cpu":
            parser.error(f"--mixed-precision {args.mixed_precision} needs a GPU; use --mixed-precision no on cpu")
        if args.lr_warmup_steps > args.steps:
            parser.error("--lr-warmup-steps cannot exceed --steps")
        try:
            args.settings = settings_from_args(args).validate("python -m training fit")
        except ValueError as e:
            parser.error(str(e))
    return args


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**values)


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _exit_when_stdin_closes() -> None:
    """The parent holds our stdin open; EOF means it is gone, so stop instead of training for nobody."""
    def watch():
        # os.read on the raw descriptor: a thread blocked in sys.stdin's buffered reader would abort the
        # interpreter at shutdown (it cannot take the buffer's lock).
        while os.read(0, 4096):
            pass
        os._exit(3)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _report(train: Callable[[Callable[[dict], None]], object], emit: Callable[[dict], None]) -> int:
    """Runs ``train(progress)``, ending with a done or error event through ``emit``; returns the exit status."""
    started = time.perf_counter()
    try:
        output = train(emit)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        log.error("%s", e)
        emit({"error": str(e)})
        return 1
    emit({"done": True, "output": str(output), "seconds": round(time.perf_counter() - started, 3)})
    return 0


def run_events(job_dir: str, emit: Callable[[dict], None]) -> int:
    """Trains one job folder, streaming its events through ``emit``; returns the exit status (0 or 1)."""
    from .job import run_job

    return _report(lambda progress: run_job(job_dir, progress=progress), emit)


def _exit_with_parent() -> None:
    """The node's trainer stops when ComfyUI goes away (killed included): the parent's sentinel becomes ready."""
    import multiprocessing
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_child(job_dir: str, events, control=None) -> int:
    """The node's trainer process (started by training/child.py through training/launch.py): the same run as
    `python -m training run`, with events as JSON bytes on the ``events`` pipe end (no pickle) and the
    process's stdout/stderr (logs, library warnings) in the job folder's trainer.log. With a ``control`` pipe
    end the job folder is completed while the child starts up (training/staged.py)."""
    _exit_with_parent()
    path = Path(job_dir) / LOG_FILE
    with open(path, "ab", buffering=0) as raw:  # fds 1 and 2 keep it open: library prints land there too
        for fd in (1, 2):
            os.dup2(raw.fileno(), fd)
    logging.basicConfig(level=logging.INFO, filename=str(path), format="%(levelname)s %(name)s: %(message)s")

    def emit(event: dict) -> None:
        events.send_bytes(json.dumps(event).encode())

    try:
        if control is not None:
            from .staged import run_staged

            return _report(lambda progress: run_staged(job_dir, control, progress), emit)
        return run_events(job_dir, emit)
    except BaseException as e:  # anything else still reaches the node as a message, not only as an exit status
        log.exception("trainer crashed")
        try:
            emit({"error": f"{type(e).__name__}: {e}"})
        except OSError:
            pass
        return 1
    finally:
        events.close()
        if control is not None:
            control.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.command == "run":
        if args.stop_on_stdin_eof:
            _exit_when_stdin_closes()
        return run_events(args.job_dir, _emit)
    from .fit import fit

    return _report(lambda progress: fit(args.model, args.images, args.out, args.settings, resolution=args.resolution,
                                        config=args.config, progress=progress, class_dir=args.class_dir,
                                        class_steps=args.class_steps), _emit)
