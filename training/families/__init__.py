"""The model families the trainer knows, each declared once (docs/DESIGN.md §5.7: how to add one)."""

from __future__ import annotations

from pathlib import Path

from .base import MemoryFigures, ModelFamily
from .sd15 import SD15
from .sdxl import SDXL

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (SDXL(), SD15())}
NAMES = tuple(FAMILIES)

__all__ = ["FAMILIES", "NAMES", "MemoryFigures", "ModelFamily", "family_named", "recognise", "family_of_file"]


def family_named(name: str) -> ModelFamily:
    """The declared family called ``name`` (the ``model_family`` setting)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {list(FAMILIES)}") from None


def recognise(config_class_names: list[str]) -> ModelFamily | None:
    """The family of a ComfyUI MODEL whose ``model_config`` classes (MRO names) are given, or None."""
    return next((f for f in FAMILIES.values() if f.recognises(config_class_names)), None)


def family_of_file(path: str | Path) -> ModelFamily:
    """The family of a single-file checkpoint (its key names) or a diffusers folder (its pipeline class)."""
    import json

    path = Path(path)
    if path.is_dir():
        index = path / "model_index.json"
        pipeline = json.loads(index.read_text()).get("_class_name") if index.is_file() else None
        found = next((f for f in FAMILIES.values() if f.diffusers_pipeline == pipeline), None)
        what = f"pipeline {pipeline!r}"
    else:
        from ..weights import read_header

        names = read_header(path)[0]
        found = next((f for f in FAMILIES.values() if any(k.startswith(f.checkpoint_keys) for k in names)), None)
        what = "checkpoint keys"
    if found is None:
        raise ValueError(
            f"{path}: not a model of a family the trainer knows ({what}); supported: "
            + ", ".join(f.title for f in FAMILIES.values())
        )
    return found
