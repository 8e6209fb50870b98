"""A toy world with trained tiny models (real SDXL architectures and file formats), to measure that the method
works, not only that it runs: world.py draws it, train.py trains the models (`make toy-world`), measure.py
samples and measures, models/ holds the committed files and their manifest."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# The tiny-model code the toy world shares with the tests and the demo (scripts/devkit/tiny_models); scripts/devkit/ goes on
# sys.path, never the repository root.
_DEVKIT = str(Path(__file__).resolve().parent.parent / "scripts" / "devkit")
if _DEVKIT not in sys.path:
    sys.path.insert(0, _DEVKIT)


def pack_module(name: str):
    """The pack's module ``name`` (e.g. ``training.fit``): under ``image_alchemy`` where the pack is imported as a
    package (tests, bench), else top-level (``python -m toy_world.train`` from the repository root)."""
    try:
        return importlib.import_module(f"image_alchemy.{name}")
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("image_alchemy"):
            raise
        return importlib.import_module(name)


def training_module(name: str):
    return pack_module(f"training.{name}")


def training_names(module: str, *names: str):
    """``from training.<module> import <names>`` through ``training_module``."""
    found = training_module(module)
    return tuple(getattr(found, n) for n in names)
