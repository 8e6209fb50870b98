"""The optimizers a LoRA trains with, each declared once: its name (the ``optimizer`` setting's choice), how it is
built from the settings, and how the learning rate applies to it (docs/DESIGN.md §4.2.1).

AdamW is torch's; Prodigy and Adafactor come from ``pytorch-optimizer`` (one pure-Python wheel); 8-bit AdamW from
``bitsandbytes``, offered only where that package is installed. Every one of them resumes through its own
``state_dict`` (training/checkpoint.py), so none needs code of its own here beyond its constructor.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Choice:
    name: str
    build: Callable[[list, object], torch.optim.Optimizer]  # (LoRA parameters, TrainSettings) → optimizer
    package: str | None = None  # an optional package it needs (offered only where it is installed)


def _adamw(params, s) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)


def _prodigy(params, s) -> torch.optim.Optimizer:
    """lr 1.0: Prodigy's steps are its estimate d of the distance to the solution (times the schedule's factor).
    Bias correction and, under warm-up, the safeguard, as its authors advise for diffusion LoRAs."""
    from pytorch_optimizer import Prodigy

    return Prodigy(
        params,
        lr=1.0,
        weight_decay=s.weight_decay,
        bias_correction=True,
        safeguard_warmup=s.lr_warmup_steps > 0,
    )


def _adafactor(params, s) -> torch.optim.Optimizer:
    """Adafactor as kohya's SDXL guide runs it: the given learning rate (no relative step, parameter scaling or
    warm-up of its own) and no first moment; the factored second moment is what saves memory."""
    from pytorch_optimizer import AdaFactor

    return AdaFactor(
        params,
        lr=s.learning_rate,
        betas=(None, 0.999),
        weight_decay=s.weight_decay,
        relative_step=False,
        scale_parameter=False,
        warmup_init=False,
    )


def _adamw8bit(params, s) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, lr=s.learning_rate, weight_decay=s.weight_decay)


OPTIMIZERS = {
    o.name: o
    for o in (
        Choice("adamw", _adamw),
        Choice("prodigy", _prodigy),  # learning_rate is not used: docs/DESIGN.md §4.2.1
        Choice("adafactor", _adafactor),
        Choice("adamw8bit", _adamw8bit, package="bitsandbytes"),
    )
}


def offered(installed: Callable[[str], bool] | None = None) -> tuple[str, ...]:
    """The optimizers this machine can run: those whose package is installed (looked up, not imported)."""
    installed = installed or (lambda package: importlib.util.find_spec(package) is not None)
    return tuple(name for name, o in OPTIMIZERS.items() if o.package is None or installed(o.package))


def build_optimizer(params: list, settings) -> torch.optim.Optimizer:
    """The settings' optimizer over the LoRA parameters."""
    chosen = OPTIMIZERS[settings.optimizer]
    try:
        return chosen.build(params, settings)
    except ImportError as e:
        package = chosen.package or "pytorch-optimizer"
        raise RuntimeError(
            f"optimizer {chosen.name} needs the {package} package ({e}): add it to the Python environment ComfyUI "
            "runs in, or choose adamw"
        ) from e
