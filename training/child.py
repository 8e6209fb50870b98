"""Runs `python -m training run JOB_DIR` as a child process and streams its JSON progress lines.

Why a plain child process and not ``multiprocessing`` spawn: inside ComfyUI, spawn re-executes the parent's
``__main__`` (ComfyUI's main.py: argument parsing, every custom node's prestartup script, torch/CUDA and
server imports) in the child unless one mutates ``sys.modules['__main__']`` or subclasses private Popen
internals, and the pack's own modules are not importable by name there (ComfyUI imports custom nodes under
path-derived names). A fresh interpreter on `-m training` with the pack root as cwd imports exactly the
trainer, the same command a user runs from a shell. Only the job folder path (made by us) is on the command
line; user values travel inside the job files.
"""
from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parent.parent
KILL_AFTER_S = 2.0


class TrainingFailed(RuntimeError):
    pass


class TrainerProcess:
    """One training child. Iterate ``events()`` for progress dicts; ``stop()`` always ends the process
    (terminate, then kill after ``KILL_AFTER_S``) and is safe to call twice."""

    def __init__(self, job_dir: str | Path, python: str = sys.executable):
        self.job_dir = Path(job_dir)
        self.stderr_path = self.job_dir / "trainer.log"
        self._stderr = open(self.stderr_path, "wb")
        # stdin stays open as a lifeline: the child exits when it closes (ComfyUI gone).
        self.process = subprocess.Popen([python, "-m", "training", "run", str(self.job_dir), "--stop-on-stdin-eof"],
                                        cwd=PACK_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name="trainer-stdout", daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self._lines.put(raw)
        self._lines.put(None)

    def events(self, poll: Callable[[], None] = lambda: None, poll_s: float = 0.1) -> Iterator[dict]:
        """Yields the child's JSON events until it exits; calls ``poll()`` at least every ``poll_s`` (the
        node raises ComfyUI's interrupt from there). Raises TrainingFailed on an error event or exit code."""
        error = None
        while True:
            poll()
            try:
                raw = self._lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if raw is None:
                break
            try:
                event = json.loads(raw)
            except ValueError:
                log.info("trainer: %s", raw.decode(errors="replace").rstrip())
                continue
            if "error" in event:
                error = event["error"]
            yield event
        code = self.process.wait()
        if error or code != 0:
            raise TrainingFailed(error or f"the trainer exited with status {code}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self._stderr.flush()
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._stderr.close()


def run_and_wait(job_dir: str | Path, on_event: Callable[[dict], None] | None = None,
                 poll: Callable[[], None] = lambda: None) -> dict:
    """Runs the job to the end and returns the final ``done`` event; the child never outlives this call."""
    child = TrainerProcess(job_dir)
    started, done = time.perf_counter(), None
    try:
        for event in child.events(poll):
            if event.get("done"):
                done = event
            elif on_event is not None and "step" in event:
                on_event(event)
    finally:
        child.stop()
    if done is None:
        raise TrainingFailed(f"the trainer ended without writing its LoRA ({time.perf_counter() - started:.1f}s)")
    return done
