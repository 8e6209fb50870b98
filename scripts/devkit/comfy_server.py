"""A real ComfyUI server for tests, the demo, the generators and the benches: started as a child process on a free
loopback port, driven over HTTP.

Development code, never shipped (the pack itself never starts processes this way).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
from PIL import Image


class PromptFailed(RuntimeError):
    """The server ran the prompt and reported an execution error (or refused it at validation)."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(
        self,
        comfy_dir: Path,
        base_dir: Path,
        custom_nodes: dict[str, Path],
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        """``env``: variables set (or, with value None, removed) in the server's environment on top of ours;
        ``extra_args``: more ComfyUI command-line arguments."""
        self.env = dict(env or {})
        self.extra_args = tuple(extra_args)
        self.comfy_dir = Path(comfy_dir)
        self.base_dir = Path(base_dir)
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.log_path = self.base_dir / "server.log"
        self.process: subprocess.Popen | None = None
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        for name, target in custom_nodes.items():
            link = self.base_dir / "custom_nodes" / name
            if not link.exists():
                link.symlink_to(Path(target).resolve(), target_is_directory=True)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        cmd = [
            self.python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--disable-auto-launch",
            "--database-url",
            f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env}
        env = {k: v for k, v in env.items() if v is not None}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/object_info", timeout=5).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no server log)"

    # -- API -------------------------------------------------------------------------------------------
    def object_info(self) -> dict:
        return requests.get(self.url + "/object_info", timeout=30).json()

    def queue(self, prompt: dict) -> str:
        r = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=30)
        body = r.json()
        if r.status_code != 200:
            raise PromptFailed(f"prompt refused: {json.dumps(body)[:2000]}", body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Waits for the prompt to finish; returns its history entry, raises PromptFailed on an execution error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json()
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error":
                    errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    message = errors[0][1].get("exception_message", "") if errors else "unknown error"
                    raise PromptFailed(f"execution_error: {message}", entry)
                return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def image(self, ref: dict) -> Image.Image:
        r = requests.get(
            self.url + "/view",
            params={
                "filename": ref["filename"],
                "subfolder": ref.get("subfolder", ""),
                "type": ref.get("type", "output"),
            },
            timeout=30,
        )
        r.raise_for_status()
        return Image.open(io.BytesIO(r.content))

    def output_images(self, entry: dict, node_id: str) -> list[Image.Image]:
        return [self.image(ref) for ref in entry["outputs"][node_id].get("images", [])]

    def interrupt(self) -> None:
        requests.post(self.url + "/interrupt", timeout=10)


def trainer_processes(comfy) -> list[tuple[int, str]]:
    """(pid, command) of trainer children of this test server: the node starts its trainer with multiprocessing
    spawn, so it is a direct child of the server running ``spawn_main`` (the spawn start method's resource
    tracker, a long-lived helper of the server, runs ``resource_tracker`` and is not a trainer)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args", "--width", "4000"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        pid, ppid, args = line.strip().split(None, 2)
        if int(ppid) == comfy.process.pid and "spawn_main" in args:
            found.append((int(pid), args))
    return found
