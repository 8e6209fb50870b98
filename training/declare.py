"""One declaration per training setting: a ``TrainSettings`` field made with ``setting()`` carries its type,
default, bounds, tooltip and group. The node's inputs (nodes/train_inputs.py), the `fit` flags (training/cli.py)
and, through the node's /object_info, the README reference are generated from it.

A setting's *user value* is what a widget or flag holds; most are the field's value itself. Three kinds differ:
``unset_zero`` (0 on a widget means "unset", the field's None: alpha, drift_weight) and the two machine-dependent
choices, ``mixed_precision`` and ``gradient_checkpointing``, whose ``auto`` is resolved by ``resolve`` with the
machine's answers (training/hardware.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Groups in the order the node shows them; every group but "core" is optional on the node.
_SAME = object()  # user_default: the field's own default
GROUPS = ("core", "prior", "drift", "apt", "batching", "checkpoints", "previews", "optimizer", "advanced")


@dataclass(frozen=True)
class Spec:
    tooltip: str
    group: str = "core"
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple | None = None  # the user's options (may differ from the field's, e.g. "auto")
    user_default: object = _SAME  # the widget/flag default when it is not the field's default
    unset_zero: bool = False  # user value 0 → field None
    node: bool = True  # a widget on TrainSubjectLoRA
    cli: bool = True  # a `python -m training fit` flag
    cli_required: bool = False
    multiline: bool = False


def setting(default, tooltip: str, **spec):
    """A ``TrainSettings`` field with its declaration."""
    s = Spec(tooltip, **spec)
    if s.group not in GROUPS:
        raise ValueError(f"unknown settings group {s.group!r}")
    return dataclasses.field(default=default, metadata={"spec": s})


@dataclass(frozen=True)
class Declared:
    name: str
    kind: str  # "int", "float", "bool", "str" or "choice"
    default: object  # the user value's default
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _kind(field: dataclasses.Field, spec: Spec) -> str:
    if spec.choices is not None:
        return "choice"
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    return kind.split("|")[0].strip()


def declared(cls) -> list[Declared]:
    """Every declared setting of a settings dataclass, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            continue
        default = f.default if spec.user_default is _SAME else spec.user_default
        if spec.unset_zero and default is None:
            default = 0.0
        out.append(Declared(f.name, _kind(f, spec), default, spec))
    return out


def field_values(cls, user: dict) -> dict:
    """User values → field values for the settings that need no machine answers (unset zeros → None)."""
    out = {}
    for d in declared(cls):
        if d.name not in user:
            continue
        value = user[d.name]
        if d.spec.unset_zero and not value:
            value = None
        elif d.kind == "float" and value is not None:
            value = float(value)
        out[d.name] = value
    return out
