"""Starts the node's trainer process and streams its progress events.

How it starts, and why this way (docs/DESIGN.md §5.1):
- ``multiprocessing`` with the ``spawn`` context: a fresh interpreter (no CUDA state or ComfyUI threads
  inherited), started by the standard library on every OS, with no shell and no command line of ours. The
  process target is the standard library's ``runpy.run_path`` on training/launch.py, so the child needs no
  importable name for this pack (ComfyUI imports custom nodes under path-derived names, and a safe-path
  interpreter such as Windows portable's ``._pth`` python puts no working folder on sys.path): the launcher puts
  the pack root first on sys.path and calls the same run function as `python -m training run JOB`.
- spawn re-runs the parent's ``__main__`` in the child (as ``__mp_main__``) when it can name it: by
  ``__main__.__spec__.name`` or else by ``__main__.__file__`` (``multiprocessing.spawn.get_preparation_data`` /
  ``_fixup_main_from_name``, the same in CPython 3.10–3.13 and its main branch). Inside ComfyUI that is
  main.py: argument parsing, every pack's prestartup script, torch/CUDA and server imports. Around
  ``Process.start()`` only, ``__main__.__spec__`` is set to a spec named ``"__main__"``, for which
  ``_fixup_main_from_name`` runs nothing (it treats it like a package's __main__.py); it is restored right after
  (the preparation data is computed inside ``start()``). This relies on how the standard library's code behaves,
  not on a documented API; it touches no private name and not the interpreter's table of imported modules.
- Events travel as JSON bytes on a one-way pipe (``send_bytes``/``recv_bytes``: nothing is unpickled here). A
  ``staged`` process starts before its job folder is complete and gets a second one-way pipe on which the node
  announces each stage as it is written (``advance``; training/staged.py).
- The child exits when this process dies (it watches ``multiprocessing.parent_process().sentinel``); ``stop()``
  terminates, then kills after ``KILL_AFTER_S``. User values travel inside the job files.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import logging
import multiprocessing
import runpy
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = Path(__file__).resolve().with_name("launch.py")
LOG_FILE = "trainer.log"  # written by the child (training/cli.py run_child)
KILL_AFTER_S = 2.0
PROCESS_NAME = "image-alchemy-trainer"

_SPAWN = multiprocessing.get_context("spawn")
_MAIN_LOCK = threading.Lock()


class TrainingFailed(RuntimeError):
    pass


@contextlib.contextmanager
def _main_not_rerun():
    """While spawn computes its preparation data, name ``__main__`` so that the child runs none of it."""
    import __main__

    with _MAIN_LOCK:
        had_spec, saved = hasattr(__main__, "__spec__"), getattr(__main__, "__spec__", None)
        __main__.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
        try:
            yield
        finally:
            if had_spec:
                __main__.__spec__ = saved
            else:
                del __main__.__spec__


class TrainerProcess:
    """One trainer process. Iterate ``events()`` for progress dicts; ``stop()`` always ends the process
    (terminate, then kill after ``KILL_AFTER_S``) and is safe to call twice."""

    def __init__(self, job_dir: str | Path, staged: bool = False):
        self.job_dir = Path(job_dir)
        self._events, child_end = _SPAWN.Pipe(duplex=False)
        control_end, self._control = _SPAWN.Pipe(duplex=False) if staged else (None, None)
        globals_ = {
            "PACK_ROOT": str(PACK_ROOT),
            "JOB_DIR": str(self.job_dir),
            "EVENTS": child_end,
            "CONTROL": control_end,
        }
        # daemon: a normal ComfyUI exit terminates it instead of waiting for the training to finish.
        self.process = _SPAWN.Process(
            target=runpy.run_path,
            args=(str(LAUNCHER),),
            kwargs={"init_globals": globals_, "run_name": "image_alchemy_trainer"},
            name=PROCESS_NAME,
            daemon=True,
        )
        try:
            with _main_not_rerun():
                self.process.start()
        finally:
            child_end.close()  # the child holds its own copy; EOF here means the child is gone
            if control_end is not None:
                control_end.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def advance(self, stage: str) -> None:
        """Tells a staged child that ``stage``'s file is complete. A child that already ended is not an error
        here: ``events()`` reports why it ended."""
        from .staged import stage_message

        try:
            self._control.send_bytes(stage_message(stage))
        except OSError:
            log.info("trainer: stage %s not delivered (the trainer has ended)", stage)

    def wait(self, on_event: Callable[[dict], None] | None = None, poll: Callable[[], None] = lambda: None) -> dict:
        """Runs to the end and returns the final ``done`` event (``on_event`` gets each step's event)."""
        started, done = time.perf_counter(), None
        for event in self.events(poll):
            if event.get("done"):
                done = event
            elif on_event is not None and "step" in event:
                on_event(event)
        if done is None:
            raise TrainingFailed(f"the trainer ended without writing its LoRA ({time.perf_counter() - started:.1f}s)")
        return done

    def events(self, poll: Callable[[], None] = lambda: None, poll_s: float = 0.1) -> Iterator[dict]:
        """Yields the child's events until it exits; calls ``poll()`` at least every ``poll_s`` (the node raises
        ComfyUI's interrupt from there). Raises TrainingFailed on an error event or a non-zero exit status."""
        error = None
        while True:
            poll()
            try:
                if not self._events.poll(poll_s):
                    continue
                raw = self._events.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                event = json.loads(raw)
            except ValueError:
                log.info("trainer: %s", raw.decode(errors="replace").rstrip())
                continue
            if "error" in event:
                error = event["error"]
            yield event
        self.process.join()
        code = self.process.exitcode
        if error or code != 0:
            raise TrainingFailed(error or f"the trainer exited with status {code}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.job_dir / LOG_FILE).read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.exitcode is None and self.process.is_alive():
            self.process.terminate()
            self.process.join(KILL_AFTER_S)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        else:
            self.process.join()
        self._events.close()
        if self._control is not None:
            self._control.close()


def run_and_wait(
    job_dir: str | Path, on_event: Callable[[dict], None] | None = None, poll: Callable[[], None] = lambda: None
) -> dict:
    """Runs the job to the end and returns the final ``done`` event; the child never outlives this call."""
    child = TrainerProcess(job_dir)
    try:
        return child.wait(on_event, poll)
    finally:
        child.stop()
