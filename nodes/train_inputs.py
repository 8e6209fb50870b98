"""TrainSubjectLoRA's setting widgets, generated from the settings' one declaration (training/declare.py):
the `fit` flags come from the same place, so a widget and its flag cannot disagree."""

from __future__ import annotations

from comfy_api.latest import io

from ..training.declare import declared
from ..training.settings import TrainSettings


def setting_inputs(optional_groups: bool) -> list:
    """The node's setting widgets: core settings (``optional_groups`` False) or the optional groups."""
    out = []
    for d in declared(TrainSettings):
        if not d.spec.node or (d.spec.group != "core") != optional_groups:
            continue
        common = {"tooltip": d.spec.tooltip, "optional": optional_groups}
        bounds = {k: getattr(d.spec, k) for k in ("min", "max", "step") if getattr(d.spec, k) is not None}
        if d.kind == "choice":
            out.append(io.Combo.Input(d.name, options=list(d.spec.choices), default=d.default, **common))
        elif d.kind == "bool":
            out.append(io.Boolean.Input(d.name, default=d.default, **common))
        elif d.kind == "int":
            out.append(io.Int.Input(d.name, default=d.default, **{k: int(v) for k, v in bounds.items()}, **common))
        elif d.kind == "float":
            out.append(io.Float.Input(d.name, default=d.default, **bounds, **common))
        else:
            out.append(io.String.Input(d.name, default=d.default, multiline=d.spec.multiline, **common))
    return out


def setting_names() -> list[str]:
    return [d.name for d in declared(TrainSettings) if d.spec.node]
