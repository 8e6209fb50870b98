"""The values training settings may take and the rules a set of them must satisfy, each broken one said with
what to use instead (``TrainSettings.validate`` raises them together; training/settings.py declares the settings
with these values)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .families import NAMES as MODEL_FAMILIES
from .families import family_named
from .optimizers import OPTIMIZERS

if TYPE_CHECKING:
    from .settings import TrainSettings

MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("fp16", "bf16", "fp32")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
DRIFT_PENALTIES = ("off", "delta", "params")
CHECKPOINTING = ("auto", "on", "off")
# λ when drift_weight is unset (docs/DESIGN.md §4.3.2). params: paper 002's SDXL LoRA script; delta: bench/drift.py.
DRIFT_WEIGHT_DEFAULTS = {"delta": 0.005, "params": 1e-6}


def problems(s: TrainSettings) -> list[str]:
    found = []
    if not s.token.strip() or any(c.isspace() for c in s.token.strip()):
        found.append(f"token must be one word, got {s.token!r}")
    if s.rank < 1:
        found.append(f"rank must be ≥ 1, got {s.rank}")
    if s.resolution is not None and (s.resolution < 64 or s.resolution % 8):
        found.append(f"resolution must be a multiple of 8, at least 64, got {s.resolution}")
    if s.alpha is not None and s.alpha <= 0:
        found.append(f"alpha must be > 0 (or unset for alpha = rank), got {s.alpha}")
    if not s.learning_rate > 0:
        found.append(f"learning_rate must be > 0, got {s.learning_rate}")
    if s.steps < 1 or s.batch_size < 1 or s.gradient_accumulation < 1:
        found.append(
            f"steps, batch_size and gradient_accumulation must be ≥ 1, got {s.steps}, "
            f"{s.batch_size} and {s.gradient_accumulation}"
        )
    if not 0 <= s.lr_warmup_steps <= s.steps:
        found.append(f"lr_warmup_steps must be between 0 and steps ({s.steps}), got {s.lr_warmup_steps}")
    for name, value, allowed in (
        ("mixed_precision", s.mixed_precision, MIXED_PRECISION),
        ("save_precision", s.save_precision, SAVE_PRECISION),
        ("lr_scheduler", s.lr_scheduler, LR_SCHEDULERS),
        ("prediction_type", s.prediction_type, PREDICTION_TYPES),
        ("optimizer", s.optimizer, tuple(OPTIMIZERS)),
        ("model_family", s.model_family, MODEL_FAMILIES),
    ):
        if value not in allowed:
            found.append(f"{name} must be one of {allowed}, got {value!r}")
    if s.noise_offset < 0 or not 0 <= s.mask_background_weight <= 1:
        found.append("noise_offset must be ≥ 0 and mask_background_weight within [0, 1]")
    if s.preview_every < 0 or s.preview_steps < 1:
        found.append(
            f"preview_every must be ≥ 0 (0 = off) and preview_steps ≥ 1, got {s.preview_every} and {s.preview_steps}"
        )
    if s.save_every < 0:
        found.append(f"save_every must be ≥ 0 (0 = no checkpoints), got {s.save_every}")
    if s.prior_images < 0 or s.prior_weight < 0:
        found.append(f"prior_images and prior_weight must be ≥ 0, got {s.prior_images} and {s.prior_weight}")
    if s.drift_penalty not in DRIFT_PENALTIES:
        found.append(f"drift_penalty must be one of {DRIFT_PENALTIES}, got {s.drift_penalty!r}")
    if s.drift_weight is not None and s.drift_weight < 0:
        found.append(f"drift_weight must be ≥ 0 (or unset for the default), got {s.drift_weight}")
    if not 0 <= s.apt_augment_p_max <= 1 or s.apt_views < 1:
        found.append(
            f"apt_augment_p_max must be within [0, 1] and apt_views ≥ 1, got {s.apt_augment_p_max} and {s.apt_views}"
        )
    if s.apt_feature_weight < 0 or s.apt_attention_weight < 0:
        found.append("apt_feature_weight and apt_attention_weight must be ≥ 0")
    if s.model_family in MODEL_FAMILIES and s.prediction_type in PREDICTION_TYPES:
        family = family_named(s.model_family)
        if s.prediction_type not in family.predictions:
            found.append(
                f"prediction_type {s.prediction_type} is not how {family.title} models predict: use one of "
                f"{family.predictions}"
            )
    if not s.flow_shift > 0:
        found.append(f"flow_shift must be > 0, got {s.flow_shift}")
    if s.mixed_precision != "no" and s.device == "cpu":
        found.append(f"mixed_precision {s.mixed_precision} needs a GPU: use 'no' on the CPU")
    return found
