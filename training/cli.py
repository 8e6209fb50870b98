"""Command line: `python -m training run JOB_DIR` and `python -m training fit --model … --images … --out …`.

Progress goes to stdout, one JSON object per line: {"step", "steps", "loss", "lr", "eta_s"} per step, then
{"done": true, "output": PATH, "seconds": S}, or {"error": MESSAGE} (exit status 1). Logs go to stderr.
``run_child`` is the same run inside the node's trainer process (training/child.py), events on a pipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .declare import declared
from .settings import TrainSettings
from .user_values import from_user_values

log = logging.getLogger("training")

LOG_FILE = "trainer.log"  # in the job folder: the node's trainer writes its logs here


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per declared setting (training/declare.py): the node's widgets come from the same declaration."""
    groups = {}
    for d in declared(TrainSettings):
        if not d.spec.cli:
            continue
        if d.spec.group not in groups:
            groups[d.spec.group] = parser.add_argument_group(f"{d.spec.group} settings")
        add = groups[d.spec.group].add_argument
        help_text = d.spec.tooltip.replace("%", "%%")
        if d.kind == "bool":
            add(d.flag, action=argparse.BooleanOptionalAction, default=d.default, help=help_text)
        elif d.kind == "choice":
            # A bare --gradient-checkpointing still means on, as when it was a switch.
            extra = {"nargs": "?", "const": "on"} if d.name == "gradient_checkpointing" else {}
            add(d.flag, choices=d.spec.choices, default=d.default, help=help_text, **extra)
        elif d.spec.cli_required:
            add(d.flag, type=str, required=True, help=help_text)
        else:
            add(d.flag, type={"int": int, "float": float, "str": str}[d.kind], default=d.default, help=help_text)


def _out_of_bounds(args: argparse.Namespace) -> list[str]:
    """The widget bounds, for the flags too."""
    problems = []
    for d in declared(TrainSettings):
        value = getattr(args, d.name, None)
        if (
            d.spec.cli
            and d.kind in ("int", "float")
            and value is not None
            and ((d.spec.min is not None and value < d.spec.min) or (d.spec.max is not None and value > d.spec.max))
        ):
            problems.append(
                f"{d.flag} must be within [{d.spec.min:g}, {d.spec.max:g}], got {value:g}"
                if d.spec.max is not None
                else f"{d.flag} must be ≥ {d.spec.min:g}, got {value:g}"
            )
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the job folder written by the TrainSubjectLoRA node")
    run.add_argument("job_dir", help="job folder (job.json + data.safetensors)")
    run.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (for a parent process that keeps stdin open as a lifeline)",
    )
    fit = sub.add_parser(
        "fit",
        help="encode a folder of photos with diffusers, then train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.add_argument(
        "--model",
        required=True,
        help="single-file .safetensors checkpoint or diffusers folder of a supported family (SD1.5, SDXL; told "
        "from the file)",
    )
    fit.add_argument("--config", help="for a single file offline: diffusers folder holding the component configs")
    fit.add_argument("--images", required=True, help="folder of 4–5 subject photos (png/jpg/webp)")
    fit.add_argument("--out", required=True, help="LoRA file to write (.safetensors)")
    fit.add_argument(
        "--masks",
        help="folder of subject masks, one per photo named like it (white = subject): the crop keeps the "
        "subject whole and the loss is weighted on it",
    )
    fit.add_argument(
        "--class-dir",
        help="prior preservation: folder caching the generated class images (reused "
        "when model, prompt, size and seed match; default: not cached)",
    )
    fit.add_argument("--class-steps", type=int, default=30, help="sampling steps per class image")
    _add_settings(fit)
    args = parser.parse_args(argv)
    if args.command == "fit":
        if not args.out.endswith(".safetensors"):
            parser.error("--out must end with .safetensors")
        for problem in _out_of_bounds(args):
            parser.error(problem)
        if not os.path.isdir(args.images):
            parser.error(f"--images {args.images} is not a folder")
        if args.masks is not None and not os.path.isdir(args.masks):
            parser.error(f"--masks {args.masks} is not a folder")
        if args.mixed_precision not in ("no", "auto") and args.device == "cpu":
            parser.error(f"--mixed-precision {args.mixed_precision} needs a GPU; use --mixed-precision no on cpu")
        if args.lr_warmup_steps > args.steps:
            parser.error("--lr-warmup-steps cannot exceed --steps")
        try:
            args.settings = settings_from_args(args)
        except ValueError as e:
            parser.error(str(e))
    return args


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The flags' user values → settings for the model's family (told from the file; a missing one is reported
    when `fit` loads it), ``auto`` answered by this machine's torch."""
    from . import devices
    from .families import family_of_file

    values = {d.name: getattr(args, d.name) for d in declared(TrainSettings) if d.spec.cli}
    device = devices.pick(args.device)  # auto: cuda, xpu, mps, else the CPU
    return from_user_values(
        values,
        machine=devices.torch_machine(device),
        where="python -m training fit",
        **({"model_family": family_of_file(args.model).name} if os.path.exists(args.model) else {}),
    )


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

    return _report(
        lambda progress: fit(
            args.model,
            args.images,
            args.out,
            args.settings,
            resolution=args.settings.training_resolution,
            config=args.config,
            progress=progress,
            class_dir=args.class_dir,
            class_steps=args.class_steps,
            masks=args.masks,
        ),
        _emit,
    )
