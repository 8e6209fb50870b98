"""Widget values (the node) and flag values (`python -m training fit`) → validated training settings, with the
``auto`` choices resolved for the machine."""

from __future__ import annotations

from .hardware import (
    Machine,
    auto_gradient_checkpointing,
    auto_mixed_precision,
    precision_problem,
    trainable_problem,
)
from .settings import CHECKPOINTING, TrainSettings


def checkpointing_choice(value) -> str:
    """auto / on / off; True / False from workflows saved when the input was a switch."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def from_user_values(values: dict, *, machine: Machine, where: str = "TrainSubjectLoRA", **fixed) -> TrainSettings:
    """Widget or flag values (training/declare.py's user values) → validated settings for ``machine`` (the capability
    answers about the training device): a device that cannot train is refused first, unset zeros become None,
    ``auto`` precision and checkpointing follow the machine's answers (and the family's memory figures).
    ``fixed``: values the caller knows (the model's family and prediction type, the device)."""
    from .declare import field_values
    from .families import family_named

    problem = trainable_problem(machine)
    if problem:
        raise ValueError(f"{where}: {problem}")
    merged = {**field_values(TrainSettings, values), **fixed}
    defaults = TrainSettings()
    family = family_named(merged.get("model_family", defaults.model_family))
    precision = auto_mixed_precision(merged.get("mixed_precision", "auto"), machine)
    problem = precision_problem(precision, machine)
    if problem:
        raise ValueError(f"{where}: {problem}")
    choice = checkpointing_choice(merged.get("gradient_checkpointing", "auto"))
    if choice not in CHECKPOINTING:
        raise ValueError(f"{where}: gradient_checkpointing must be one of {CHECKPOINTING}, got {choice!r}")
    merged["mixed_precision"] = precision
    merged["gradient_checkpointing"] = auto_gradient_checkpointing(
        choice,
        machine,
        batch_size=merged.get("batch_size", defaults.batch_size),
        resolution=merged.get("resolution") or family.native_resolution,
        mixed_precision=precision,
        family=family,
    )
    if isinstance(merged.get("token"), str):
        merged["token"], merged["class_word"] = merged["token"].strip(), merged.get("class_word", "").strip()
    return TrainSettings.from_dict(merged).validate(where)
