"""Shared fixtures: the pack imported as a package, tiny models on disk, and a real ComfyUI server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = Path(os.environ.get("IMAGE_ALCHEMY_COMFYUI", ROOT / ".cache" / "comfyui")).resolve()
PACK_FOLDER_NAME = "comfyui-image-alchemy"

# scripts/devkit/ (the tiny models, the server harness, the tiny-model pack; not the repository root) and tests/support.
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))

from pack_import import TINY_PACK, TINY_PACK_NAME, import_pack  # noqa: E402

import_pack()

# The tiny models and the inputs built from them, one fixture each (tests/support/fixtures.py).
pytest_plugins = ["support.fixtures"]


# ComfyUI itself is importable in tests (GraphBuilder, comfy classes for the tiny-model factory).
if str(COMFY_DIR) not in sys.path:
    sys.path.append(str(COMFY_DIR))


@pytest.fixture(scope="session")
def comfy_dir() -> Path:
    if not (COMFY_DIR / "main.py").exists():
        pytest.fail(f"No ComfyUI at {COMFY_DIR}: run `make provision` (make test does it).")
    return COMFY_DIR


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, comfy_dir, tiny_models):
    """One real ComfyUI server for the session, with our pack and the tiny-model pack (scripts/devkit/tiny_pack) installed."""
    from comfy_server import ComfyServer

    base = tmp_path_factory.mktemp("comfy_base")
    (base / "models").mkdir()
    (base / "models" / "tiny_sdxl").symlink_to(tiny_models["unet"].parent, target_is_directory=True)
    server = ComfyServer(comfy_dir, base, {PACK_FOLDER_NAME: ROOT, TINY_PACK_NAME: TINY_PACK})
    server.start()
    yield server
    server.stop()


def pytest_collection_modifyitems(config, items):
    """Marks `server` every test that starts a real ComfyUI (through the `comfy` fixture, or its own with
    `pytestmark = pytest.mark.server`): the subset CI also runs on the oldest supported ComfyUI."""
    for item in items:
        if "comfy" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    server = item.funcargs.get("comfy") if hasattr(item, "funcargs") else None
    if report.failed and server is not None:
        report.sections.append(("ComfyUI server log (tail)", server.log_tail()))
