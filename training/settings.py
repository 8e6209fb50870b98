"""Training settings: one dataclass shared by the node, `python -m training run` and `python -m training fit`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .declare import setting
from .families import family_named
from .optimizers import offered as offered_optimizers
from .setting_rules import (  # noqa: F401  (the settings' vocabulary, imported from here by the nodes and CLI)
    CHECKPOINTING,
    DRIFT_PENALTIES,
    DRIFT_WEIGHT_DEFAULTS,
    LR_SCHEDULERS,
    MIXED_PRECISION,
    MODEL_FAMILIES,
    PREDICTION_TYPES,
    SAVE_PRECISION,
    problems,
)


@dataclass
class TrainSettings:
    """Everything that decides the LoRA's bytes (together with the base weights and the encoded data), each
    setting declared once (training/declare.py): the node's inputs and the `fit` flags are generated from here."""

    token: str = setting(
        "sks",
        "Rare one-word placeholder with no prior (see Rare Token Picker).",
        user_default="iklan",
        cli_required=True,
    )
    class_word: str = setting("dog", "The subject's class, e.g. dog, person, mug.", cli_required=True)
    steps: int = setting(500, "Optimizer steps.", min=1, max=20000)
    learning_rate: float = setting(
        1e-4, "Learning rate (adamw, adafactor, adamw8bit); prodigy finds its own.", min=1e-7, max=1e-2, step=1e-5
    )
    rank: int = setting(8, "LoRA rank.", min=1, max=256)
    # None → rank: kohya's alpha/rank = 1 is the paper's α = 1
    alpha: float | None = setting(
        None,
        "LoRA alpha (scale = alpha/rank); 0 means alpha = rank, the paper's scale 1.",
        min=0.0,
        max=1024.0,
        step=0.5,
        unset_zero=True,
    )
    batch_size: int = setting(1, "Images per micro-batch (see gradient_accumulation).", min=1, max=32)
    resolution: int | None = setting(
        None,
        "Training size in pixels; 0 = the model's native size (SD1.5: 512, SDXL: 1024). Non-square photos "
        "train at the model's aspect bucket of about this area nearest their aspect (SDXL at 1024: 1216×832 "
        "for 3:2).",
        min=0,
        max=2048,
        step=64,
        user_default=0,
        unset_zero=True,
    )
    seed: int = setting(0, "Seed of init, noise and order.", min=0, max=2**31 - 1)
    mixed_precision: str = setting(
        "no",
        "auto: bf16 on GPUs that compute it natively (NVIDIA RTX 30xx+, AMD RDNA3+, Intel Arc, Apple on macOS "
        "14+), fp16 on those that only emulate bf16 (T4, V100, RTX 20xx; never on Apple GPUs), full precision on "
        "the CPU and wherever ComfyUI itself runs fp32.",
        choices=("auto", "no", "bf16", "fp16"),
        user_default="auto",
    )
    gradient_checkpointing: bool = setting(
        False,
        "Recompute activations in the backward pass: far less GPU memory (1024², batch 1: ≈0.5 instead of "
        "≈7 GiB), about 30% slower. auto: on when a step without it would not fit in the GPU's memory (on a Mac: the "
        "RAM it shares).",
        choices=CHECKPOINTING,
        user_default="auto",
    )
    flip: bool = setting(False, "Horizontal-flip augmentation (p = 0.5), from pre-encoded flipped images.")
    noise_offset: float = setting(
        0.0, "Noise offset; 0.05–0.1 helps very dark or bright subjects.", min=0.0, max=0.5, step=0.01
    )
    # Drift-free options (docs/DESIGN.md §4.3), all off by default: the paper-001 intentional overfit.
    prior_images: int = setting(
        0,
        "Prior preservation: this many 'a photo of <class>' images are drawn by the model "
        "(cached) and trained on beside the subject; 0 = off. DreamBooth uses 100–200.",
        group="prior",
        min=0,
        max=1000,
    )
    prior_weight: float = setting(
        1.0, "Weight of the class-image loss (prior preservation).", group="prior", min=0.0, max=10.0, step=0.1
    )
    drift_penalty: str = setting(
        "off",
        "Drift penalty (Regularized Personalization without Distributional Drift): delta = λ·Σ‖ΔW‖² (the drift "
        "itself), params = λ·Σ‖p‖² over the LoRA weights (the paper's SDXL script).",
        group="drift",
        choices=DRIFT_PENALTIES,
    )
    drift_weight: float | None = setting(
        None,
        "λ of the drift penalty; 0 = the default of the chosen form ("
        + ", ".join(f"{k} {v:g}" for k, v in DRIFT_WEIGHT_DEFAULTS.items())
        + ").",
        group="drift",
        min=0.0,
        max=1000.0,
        step=1e-6,
        unset_zero=True,
    )
    apt_augment: bool = setting(
        False,
        "APT adaptive augmentation: zoom-out 1–3× and rotation ±15°, more often where "
        "the model overfits (p = clip(γ, 0, p_max)).",
        group="apt",
    )
    apt_augment_p_max: float = setting(
        0.5, "APT: the largest augmentation probability p_max.", group="apt", min=0.0, max=1.0, step=0.05
    )
    apt_loss_weighting: bool = setting(
        False, "APT adaptive loss weight 1 − γ per timestep bin: overfit bins train less.", group="apt"
    )
    apt_features: bool = setting(
        False,
        "APT representation stabilization: keep the UNet's feature mean/std close to the base model's.",
        group="apt",
    )
    apt_feature_weight: float = setting(
        0.5, "Weight of the representation-stabilization loss.", group="apt", min=0.0, max=1000.0, step=0.01
    )  # tuned with bench/drift.py (tiny model)
    apt_attention: bool = setting(
        False, "APT attention alignment: keep cross-attention maps close to the base model's.", group="apt"
    )
    apt_attention_weight: float = setting(
        30.0, "Weight of the attention-alignment loss.", group="apt", min=0.0, max=1000.0, step=0.01
    )  # tuned with bench/drift.py (tiny model)
    # diffusers' documented SDXL DreamBooth-LoRA run is batch 1 × 4: four samples per step at batch 1's memory.
    gradient_accumulation: int = setting(
        4,
        "Micro-batches per optimizer step: each step learns from batch_size × "
        "this images at batch_size's memory. 4 = diffusers' SDXL DreamBooth "
        "LoRA run.",
        group="batching",
        min=1,
        max=64,
    )
    save_every: int = setting(
        0,
        "Every this many steps write <lora_name>-step<N>.safetensors beside the LoRA (with "
        "its resume state, <lora_name>-step<N>.trainstate); 0 = off. A cancelled run keeps "
        "the checkpoints written so far.",
        group="checkpoints",
        min=0,
        max=20000,
    )
    resume_from: str = setting(
        "",
        "Continue from a checkpoint (its name in models/loras, e.g. iklan_dog-step200; "
        "`fit`: its path): weights, step count and optimizer state, with the same photos "
        "and settings (steps may grow); empty = start fresh.",
        group="checkpoints",
    )
    preview_every: int = setting(
        100,
        "Every this many steps (and at the last) the LoRA so far draws the training "
        "prompt and preview_prompt from a fixed seed: live on the node, and as the "
        "previews grid; 0 = off.",
        group="previews",
        min=0,
        max=20000,
    )
    preview_prompt: str = setting(
        "a watercolor painting of {token} {class_word}",
        "The second preview prompt ({token} and {class_word} are filled in); empty = only the training prompt.",
        group="previews",
    )
    preview_steps: int = setting(8, "Sampling steps per preview (Euler, CFG 5).", group="previews", min=1, max=100)
    optimizer: str = setting(
        "adamw",
        "adamw: AdamW at learning_rate. prodigy: learning-rate free, it estimates its own step size "
        "(learning_rate is not used; the schedule still scales the step). adafactor: factored second moments, at "
        "learning_rate. adamw8bit: AdamW with 8-bit state (listed where bitsandbytes is installed).",
        group="optimizer",
        choices=offered_optimizers(),
    )
    # Machine and model answers, and the rarely changed: `fit` flags, not node widgets.
    lr_scheduler: str = setting(
        "constant", "Learning-rate schedule.", group="advanced", choices=LR_SCHEDULERS, node=False
    )
    lr_warmup_steps: int = setting(0, "Warm-up steps of the schedule.", group="advanced", min=0, node=False)
    mask_background_weight: float = setting(
        0.1,
        "Loss weight outside the subject mask, when masks are given.",
        group="advanced",
        min=0.0,
        max=1.0,
        node=False,
    )
    weight_decay: float = setting(1e-4, "Weight decay (decoupled, as AdamW's).", group="advanced", min=0.0, node=False)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.", group="advanced", min=0.0, node=False)
    model_family: str = setting(
        "sdxl",
        "The base model's family (the node reads it from the MODEL, `fit` from the checkpoint).",
        group="advanced",
        choices=MODEL_FAMILIES,
        node=False,
        cli=False,
    )
    prediction_type: str = setting(
        "epsilon",
        "What the base model predicts (the node reads it from the MODEL): epsilon, v_prediction, or flow "
        "(rectified flow, with flow_shift).",
        group="advanced",
        choices=PREDICTION_TYPES,
        node=False,
    )
    zero_terminal_snr: bool = setting(
        False,
        "Betas rescaled to zero terminal SNR, for zsnr / v-prediction models (the node reads it from the MODEL).",
        group="advanced",
        node=False,
    )
    flow_shift: float = setting(
        1.0,
        "Timestep shift of flow-matching models (the node reads it from the MODEL's sampling).",
        group="advanced",
        min=0.01,
        max=100.0,
        node=False,
    )
    save_precision: str = setting(
        "fp16", "Dtype of the saved LoRA weights.", group="advanced", choices=SAVE_PRECISION, node=False
    )
    device: str = setting(
        "auto",
        "auto | cpu | cuda[:N] | xpu[:N] | mps (auto: the first of cuda, xpu, mps that torch finds, "
        "else cpu; the node uses ComfyUI's device).",
        group="advanced",
        node=False,
    )
    apt_views: int = setting(
        4, "APT: augmented views per image, encoded once before training.", group="advanced", min=1, node=False
    )

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def training_resolution(self) -> int:
        """The resolution, or the family's native size when unset (0 on the widget)."""
        return self.resolution or family_named(self.model_family).native_resolution

    @property
    def prompt(self) -> str:
        return f"a photo of {self.token} {self.class_word}"

    @property
    def preview_prompts(self) -> list[str]:
        """What the previews draw: the training prompt, then the user's (placeholders filled in)."""
        extra = self.preview_prompt.replace("{token}", self.token).replace("{class_word}", self.class_word).strip()
        return [self.prompt] + ([extra] if extra else [])

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
        apt = [
            name
            for name, on in (
                ("augment", self.apt_augment),
                ("loss_weight", self.apt_loss_weighting),
                (f"features={self.apt_feature_weight:g}", self.apt_features),
                (f"attention={self.apt_attention_weight:g}", self.apt_attention),
            )
            if on
        ]
        if apt:
            parts.append(f"apt({', '.join(apt)})")
        return "+".join(parts) or "none"

    def validate(self, where: str = "TrainSubjectLoRA") -> TrainSettings:
        """Raises ValueError naming the bad setting and what to use instead."""
        found = problems(self)
        if found:
            raise ValueError(f"{where}: invalid training settings: " + "; ".join(found))
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**values)
