"""Training settings: one dataclass shared by the node, `python -m training run` and `python -m training fit`."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("fp16", "bf16", "fp32")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")
DRIFT_PENALTIES = ("off", "delta", "params")
# λ when drift_weight is unset. params: paper 002's SDXL LoRA script; delta: tuned with bench/drift.py.
DRIFT_WEIGHT_DEFAULTS = {"delta": 0.005, "params": 1e-6}


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
    # Micro-batches per optimizer step: diffusers' documented SDXL DreamBooth-LoRA run is batch 1 × 4, which sees
    # four samples per step at batch 1's memory.
    gradient_accumulation: int = 4
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    flip: bool = False  # horizontal flip with p=0.5, from pre-encoded flipped latents
    noise_offset: float = 0.0
    mask_background_weight: float = 0.1  # loss weight outside the subject mask (when masks are given)
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False  # betas rescaled to zero terminal SNR (the MODEL's model_sampling.zsnr)
    save_precision: str = "fp16"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # Drift-free options (DESIGN §3), all off by default: the paper-001 intentional overfit.
    prior_images: int = 0  # prior preservation: class images from the base model (0 = off)
    prior_weight: float = 1.0  # weight of the class-image loss
    drift_penalty: str = "off"  # paper 002: "delta" = λ·Σ‖ΔW‖²_F, "params" = λ·Σ‖p‖² over LoRA parameters
    drift_weight: float | None = None  # λ; None → DRIFT_WEIGHT_DEFAULTS[drift_penalty]
    apt_augment: bool = False  # APT adaptive augmentation (zoom-out 1–3×, rotation ±15°) with p = clip(γ, 0, p_max)
    apt_augment_p_max: float = 0.5
    apt_views: int = 4  # pre-encoded augmented views per image
    apt_loss_weighting: bool = False  # APT adaptive loss weight 1 − γ_b
    apt_features: bool = False  # APT representation stabilization (feature mean/std vs the base model)
    apt_feature_weight: float = 0.5  # tuned with bench/drift.py (tiny model)
    apt_attention: bool = False  # APT attention alignment (cross-attention maps vs the base model)
    apt_attention_weight: float = 30.0  # tuned with bench/drift.py (tiny model)

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def prompt(self) -> str:
        return f"a photo of {self.token} {self.class_word}"

    @property
    def class_prompt(self) -> str:
        """What the base model draws for prior preservation: the training prompt without the token."""
        return f"a photo of {self.class_word}"

    @property
    def drift_lambda(self) -> float:
        if self.drift_penalty == "off":
            return 0.0
        return float(DRIFT_WEIGHT_DEFAULTS[self.drift_penalty] if self.drift_weight is None else self.drift_weight)

    @property
    def apt_indicator(self) -> bool:
        """The overfitting indicator γ_b is needed (it costs a base-model pass per step)."""
        return self.apt_augment or self.apt_loss_weighting

    @property
    def base_pass(self) -> bool:
        return self.apt_indicator or self.apt_features or self.apt_attention

    def regularizer(self) -> str:
        """Short description for the LoRA metadata, e.g. 'prior(100, w=1)+drift(delta, λ=1)' or 'none'."""
        parts = []
        if self.prior_images:
            parts.append(f"prior({self.prior_images}, w={self.prior_weight:g})")
        if self.drift_penalty != "off":
            parts.append(f"drift({self.drift_penalty}, λ={self.drift_lambda:g})")
        apt = [name for name, on in (("augment", self.apt_augment), ("loss_weight", self.apt_loss_weighting),
                                     (f"features={self.apt_feature_weight:g}", self.apt_features),
                                     (f"attention={self.apt_attention_weight:g}", self.apt_attention)) if on]
        if apt:
            parts.append(f"apt({', '.join(apt)})")
        return "+".join(parts) or "none"

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
        if self.steps < 1 or self.batch_size < 1 or self.gradient_accumulation < 1:
            problems.append(f"steps, batch_size and gradient_accumulation must be ≥ 1, got {self.steps}, "
                            f"{self.batch_size} and {self.gradient_accumulation}")
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
        if self.prior_images < 0 or self.prior_weight < 0:
            problems.append(f"prior_images and prior_weight must be ≥ 0, got {self.prior_images} and {self.prior_weight}")
        if self.drift_penalty not in DRIFT_PENALTIES:
            problems.append(f"drift_penalty must be one of {DRIFT_PENALTIES}, got {self.drift_penalty!r}")
        if self.drift_weight is not None and self.drift_weight < 0:
            problems.append(f"drift_weight must be ≥ 0 (or unset for the default), got {self.drift_weight}")
        if not 0 <= self.apt_augment_p_max <= 1 or self.apt_views < 1:
            problems.append(f"apt_augment_p_max must be within [0, 1] and apt_views ≥ 1, got {self.apt_augment_p_max} "
                            f"and {self.apt_views}")
        if self.apt_feature_weight < 0 or self.apt_attention_weight < 0:
            problems.append("apt_feature_weight and apt_attention_weight must be ≥ 0")
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
