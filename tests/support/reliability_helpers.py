"""Helpers for the reliability tests: run a prompt that must fail, and prove the server survived it and that no
file was written or damaged (a snapshot of the server's folders before and after)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed

# Folders a failing prompt must leave exactly as they were (server.log, the database and previews in temp/
# change on every prompt, so they are not part of the snapshot).
WATCHED = ("models", "input", "output")


def snapshot(base_dir: Path) -> dict[str, tuple[int, str]]:
    """relative path → (size, sha1) of every file under the watched folders (symlinked model folders included)."""
    files = {}
    for name in WATCHED:
        root = base_dir / name
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(base_dir))] = (
                    path.stat().st_size,
                    hashlib.sha1(path.read_bytes()).hexdigest(),
                )
    return files


def error_text(failure: PromptFailed) -> str:
    """The message a user sees: the execution error's message, or the validation errors of a refused prompt
    (not the traceback or node type, which would name the node whatever the message says)."""
    return str(failure)


def expect_error(comfy, prompt: dict, *patterns: str, timeout: float = 120) -> str:
    """Runs ``prompt``, which must fail with an error matching every regex in ``patterns`` (the problem and the
    fix); the server must stay up and no watched file may change. Returns the error text."""
    before = snapshot(comfy.base_dir)
    with pytest.raises(PromptFailed) as failure:
        comfy.run(prompt, timeout=timeout)
    text = error_text(failure.value)
    for pattern in patterns:
        assert re.search(pattern, text, re.S), f"{pattern!r} not in error: {text[:1500]}"
    assert comfy.alive()
    assert snapshot(comfy.base_dir) == before, "a failing prompt wrote or changed a file"
    return text


def shaped_image(g: GraphBuilder, batch=1, height=64, width=64, channels=3):
    return g.node("ImageAlchemyTest_ShapedImage", batch=batch, height=height, width=width, channels=channels).out(0)


def solid_mask(g: GraphBuilder, value: float, height=64, width=64):
    return g.node("SolidMask", value=value, width=width, height=height).out(0)


def save(g: GraphBuilder, image, prefix: str):
    return g.node("SaveImage", images=image, filename_prefix=prefix)


def save_mask(g: GraphBuilder, mask, prefix: str):
    return save(g, g.node("MaskToImage", mask=mask).out(0), prefix)


class Evil:
    """A pickle that runs code when loaded without ``weights_only``: it creates ``marker`` (a folder)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def write_pickle_bomb(path: Path, marker: Path) -> Path:
    """A checkpoint whose unpickling would create ``marker``: loaders must refuse it (and never create it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"weight": torch.zeros(1)}, "payload": Evil(marker)}, str(path))
    return path


def write_truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path
