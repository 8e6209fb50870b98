"""Training settings: one dataclass shared by the node, `python -m training run` and `python -m training fit`."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("fp16", "bf16", "fp32")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class TrainSettings:
    """Everything that decides the LoRA's bytes (together with the base weights and the encoded data)."""

    token: str = "sks"
    class_word: str = "dog"
    rank: int = 8
    alpha: float | None = None  # None → rank: kohya's alpha/rank = 1 is the paper's α = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    steps: int = 500
    batch_size: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    flip: bool = False  # horizontal flip with p=0.5, from pre-encoded flipped latents
    noise_offset: float = 0.0
    mask_background_weight: float = 0.1  # loss weight outside the subject mask (when masks are given)
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    prediction_type: str = "epsilon"
    save_precision: str = "fp16"
    device: str = "auto"  # "auto" = cuda when available, else cpu

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def prompt(self) -> str:
        return f"a photo of {self.token} {self.class_word}"

    def validate(self, where: str = "TrainSubjectLoRA") -> "TrainSettings":
        """Raises ValueError naming the bad setting and what to use instead."""
        problems = []
        if not self.token.strip() or any(c.isspace() for c in self.token.strip()):
            problems.append(f"token must be one word, got {self.token!r}")
        if self.rank < 1:
            problems.append(f"rank must be ≥ 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            problems.append(f"alpha must be > 0 (or unset for alpha = rank), got {self.alpha}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.steps < 1 or self.batch_size < 1:
            problems.append(f"steps and batch_size must be ≥ 1, got {self.steps} and {self.batch_size}")
        if not 0 <= self.lr_warmup_steps <= self.steps:
            problems.append(f"lr_warmup_steps must be between 0 and steps ({self.steps}), got {self.lr_warmup_steps}")
        for name, value, allowed in (("mixed_precision", self.mixed_precision, MIXED_PRECISION),
                                     ("save_precision", self.save_precision, SAVE_PRECISION),
                                     ("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS),
                                     ("prediction_type", self.prediction_type, PREDICTION_TYPES)):
            if value not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {value!r}")
        if self.noise_offset < 0 or not 0 <= self.mask_background_weight <= 1:
            problems.append("noise_offset must be ≥ 0 and mask_background_weight within [0, 1]")
        if self.mixed_precision != "no" and self.device == "cpu":
            problems.append(f"mixed_precision {self.mixed_precision} needs a GPU: use 'no' on the CPU")
        if problems:
            raise ValueError(f"{where}: invalid training settings: " + "; ".join(problems))
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**values)
