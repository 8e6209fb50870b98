"""What the trainer is handed and what it hands back: the cached latents, embeddings and masks of one run
(``TrainingData``, checked against the settings before a step is taken) and the trained LoRA (``TrainResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .families import family_named
from .settings import TrainSettings

TENSOR_NAMES = (
    "latents",
    "latents_flipped",
    "masks",
    "prompt_embeds",
    "pooled_prompt_embeds",
    "time_ids",
    "class_latents",
    "class_prompt_embeds",
    "class_pooled_prompt_embeds",
    "class_time_ids",
    "augmented_latents",
    "augmented_masks",
    "photo_crops",
)


@dataclass
class TrainingData:
    """Encoded subject: latents already scaled for the denoiser, the family's conditioning (training/families:
    SDXL: prompt embeddings, pooled text and size/crop time ids; SD1.5: prompt embeddings only), optional loss
    masks.

    Conditioning tensors have one row (shared prompt) or one row per image; masks are N×1×h×w at latent size.
    Prior preservation adds class-image latents and their conditioning (``class_*``); APT's augmentation adds
    ``augmented_latents`` (views per image, image-major: row i·views + k) and, with masks, ``augmented_masks``.
    """

    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None
    latents_flipped: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    class_latents: torch.Tensor | None = None
    class_prompt_embeds: torch.Tensor | None = None
    class_pooled_prompt_embeds: torch.Tensor | None = None
    class_time_ids: torch.Tensor | None = None
    augmented_latents: torch.Tensor | None = None
    augmented_masks: torch.Tensor | None = None
    # Per photo [height, width, crop top, crop left, bucket h, bucket w], for the LoRA's metadata (any family).
    photo_crops: torch.Tensor | None = None

    def check(self, settings: TrainSettings) -> TrainingData:
        n = self.latents.shape[0]
        if self.latents.dim() != 4 or n < 1:
            raise ValueError(f"latents must be N×C×h×w with N ≥ 1, got {tuple(self.latents.shape)}")
        family = family_named(settings.model_family)
        for name in family.conditioning:
            if getattr(self, name) is None:
                raise ValueError(f"{family.title} needs {name}: encode it with the model's own text encoders")
            rows = getattr(self, name).shape[0]
            if rows not in (1, n):
                raise ValueError(f"{name} has {rows} rows: expected 1 or one per image ({n})")
        if self.latents_flipped is not None and self.latents_flipped.shape != self.latents.shape:
            raise ValueError("latents_flipped must have the same shape as latents")
        if settings.flip and self.latents_flipped is None:
            raise ValueError("flip is on but the data has no latents_flipped: encode the flipped images too")
        if self.masks is not None and (self.masks.shape[0] != n or self.masks.shape[-2:] != self.latents.shape[-2:]):
            raise ValueError(
                f"masks {tuple(self.masks.shape)} must be N×1×h×w like latents {tuple(self.latents.shape)}"
            )
        if settings.prior_images:
            self._check_class_data(family.conditioning)
        if settings.apt_augment:
            views = n * settings.apt_views
            if self.augmented_latents is None or self.augmented_latents.shape != (views, *self.latents.shape[1:]):
                got = None if self.augmented_latents is None else tuple(self.augmented_latents.shape)
                raise ValueError(
                    f"apt_augment is on: expected {views} augmented latents ({settings.apt_views} views "
                    f"per image) shaped like the latents, got {got}: encode the views too"
                )
            if self.masks is not None and (self.augmented_masks is None or self.augmented_masks.shape[0] != views):
                raise ValueError("apt_augment with masks needs augmented_masks, one per augmented view")
        return self

    def _check_class_data(self, conditioning: tuple[str, ...]) -> None:
        names = ("class_latents", *(f"class_{name}" for name in conditioning))
        missing = [k for k in names if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"prior preservation is on but the data has no {missing}: generate and encode the class images"
            )
        m = self.class_latents.shape[0]
        if m < 1 or self.class_latents.shape[1:] != self.latents.shape[1:]:
            raise ValueError(
                f"class_latents {tuple(self.class_latents.shape)} must be M×C×h×w like the latents "
                f"{tuple(self.latents.shape)}: generate the class images at the training resolution"
            )
        for name in names[1:]:
            if getattr(self, name).shape[0] not in (1, m):
                raise ValueError(f"{name} must have 1 row or one per class image ({m})")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in TENSOR_NAMES if getattr(self, k) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TrainingData:
        return cls(**{k: tensors[k] for k in TENSOR_NAMES if k in tensors})


@dataclass
class TrainResult:
    kohya_state_dict: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. APT's final γ per bin
