"""How the trainer process starts, through real servers: under a safe-path interpreter (Windows portable runs
an embedded Python with a ``._pth`` file: no working folder on sys.path, PYTHONPATH ignored) and in a normal
venv; ComfyUI's main.py never runs again in the trainer; the trainer stops when ComfyUI dies."""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from comfy_server import ComfyServer, trainer_processes
from conftest import PACK_FOLDER_NAME, ROOT
from pack_import import TINY_PACK, TINY_PACK_NAME
from support.training_graphs import train_graph


def _server(tmp_path_factory, comfy_dir, tiny_models, name, **options) -> ComfyServer:
    base = tmp_path_factory.mktemp(name)
    (base / "models").mkdir()
    (base / "models" / "tiny_sdxl").symlink_to(tiny_models["unet"].parent, target_is_directory=True)
    return ComfyServer(
        comfy_dir,
        base,
        {PACK_FOLDER_NAME: ROOT, TINY_PACK_NAME: TINY_PACK},
        **options,
    )


def _train_once(server: ComfyServer, name: str) -> None:
    g, _ = train_graph(lora_name=name, steps=2)
    server.run(g.finalize(), timeout=300)
    assert (server.base_dir / "models" / "loras" / f"{name}.safetensors").exists()
    assert not trainer_processes(server)
    # main.py's module-level code (argument parsing, prestartup scripts) ran once: in the server only.
    runs = (server.base_dir / "prestartup_runs.log").read_text().split()
    assert runs == [str(server.process.pid)], runs


def test_trains_when_the_server_runs_in_safe_path_mode(tmp_path_factory, comfy_dir, tiny_models):
    """PYTHONSAFEPATH=1: no script folder or working folder on sys.path (ComfyUI's folder comes from PYTHONPATH,
    as portable's ._pth lists ../ComfyUI). A trainer started as `python -m training` from the pack folder fails
    here with "No module named training"."""
    server = _server(
        tmp_path_factory, comfy_dir, tiny_models, "safe_path", env={"PYTHONSAFEPATH": "1", "PYTHONPATH": str(comfy_dir)}
    )
    try:
        server.start()
        _train_once(server, "start_safe_path")
    finally:
        server.stop()


def _pth_interpreter(folder: Path, comfy_dir: Path) -> Path:
    """A copy of this Python with a ``._pth`` file beside it, the way Windows portable ships python_embeded: the
    file alone sets sys.path (stdlib, site-packages, ComfyUI's folder) and implies isolated, safe-path mode."""
    exe = folder / "python.exe"
    shutil.copy2(os.path.realpath(sys._base_executable), exe)
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = [p for p in sys.path if p.endswith(".zip")] + [
        stdlib,
        os.path.join(stdlib, "lib-dynload"),
        sysconfig.get_paths()["purelib"],
        str(comfy_dir),
        ".",
    ]
    # CPython ≥ 3.11 (Modules/getpath.py) reads `<executable>._pth` on POSIX too ("python.exe._pth" here).
    Path(f"{exe}._pth").write_text("\n".join(paths) + "\nimport site\n")
    return exe


def test_trains_when_the_server_runs_on_a_pth_interpreter(tmp_path_factory, comfy_dir, tiny_models):
    exe = _pth_interpreter(tmp_path_factory.mktemp("python_embeded"), comfy_dir)
    probe = subprocess.run(
        [str(exe), "-c", "import sys, torch; print(sys.flags.safe_path, sys.flags.isolated)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": "/nonexistent"},
        timeout=120,
    )
    if probe.stdout.split() != ["True", "1"]:
        pytest.skip(f"this Python ignores a ._pth file beside a copy of its executable: {probe.stderr[-500:]}")
    server = _server(tmp_path_factory, comfy_dir, tiny_models, "pth_python", python=str(exe))
    try:
        server.start()
        _train_once(server, "start_pth")
    finally:
        server.stop()


def test_the_trainer_exits_when_comfyui_is_killed(tmp_path_factory, comfy_dir, tiny_models):
    server = _server(tmp_path_factory, comfy_dir, tiny_models, "lifeline")
    try:
        server.start()
        g, _ = train_graph(lora_name="start_orphan", steps=20000)
        server.queue(g.finalize())
        deadline = time.monotonic() + 120
        while not trainer_processes(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        ((pid, _),) = trainer_processes(server)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        zombie = Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        assert not Path(f"/proc/{pid}").exists() or zombie, "the trainer outlived ComfyUI"
    finally:
        server.stop()
