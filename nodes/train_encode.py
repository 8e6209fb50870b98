"""What TrainSubjectLoRA prepares and encodes in the graph for the trainer, with the wired VAE and CLIP (the
encoders inference will use): the photos in their aspect bucket, cut around the subject; their latents (flipped,
APT's views), masks at latent size and prompt embeddings; the class images; the preview prompts' conditioning."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..training.augment import augmented_views
from ..training.families import ModelFamily, family_named
from ..training.preprocess import Crop, prepare
from ..training.preview import PreviewConditioning
from ..training.settings import TrainSettings
from ..training.trainer import TrainingData
from . import class_images

NODE = "TrainSubjectLoRA"


class Photos(NamedTuple):
    """The photos cut to their bucket: pixels BHWC for the VAE, masks B×1×h×w or None, where each crop came from."""

    pixels: torch.Tensor
    masks: torch.Tensor | None
    crops: list[Crop]


def text_conditioning(clip, prompt: str, family: ModelFamily) -> dict[str, torch.Tensor]:
    """``prompt`` encoded by the wired CLIP, under the family's conditioning names."""
    return family.text_conditioning(*clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True))


def encode(model, clip, vae, photos: Photos, settings: TrainSettings) -> TrainingData:
    """The photos' latents (flipped and APT's views when asked), their masks at latent size, the prompt's and the
    crops' conditioning."""
    pixels, masks = photos.pixels, photos.masks
    latent_format = model.model.process_latent_in  # the model's own latent scaling (SDXL: ×0.13025)
    latents = latent_format(vae.encode(pixels)).float().cpu()
    flipped = latent_format(vae.encode(pixels.flip(2))).float().cpu() if settings.flip else None
    family = family_named(settings.model_family)
    augmented = augmented_masks = None
    if settings.apt_augment:  # APT's views, encoded once (training/augment.py); BHWC ↔ BCHW around the warp
        views, view_masks = augmented_views(pixels.movedim(-1, 1), settings.apt_views, settings.seed, masks)
        augmented = latent_format(vae.encode(views.movedim(1, -1).contiguous())).float().cpu()
        if view_masks is not None:
            augmented_masks = latent_masks(view_masks, latents)
    if masks is not None:
        masks = latent_masks(masks, latents)
    return TrainingData(
        latents=latents,
        latents_flipped=flipped,
        masks=masks,
        augmented_latents=augmented,
        augmented_masks=augmented_masks,
        **text_conditioning(clip, settings.prompt, family),
        **family.size_conditioning(photos.crops),
        photo_crops=torch.tensor([crop.time_ids() for crop in photos.crops], dtype=torch.int64),
    )


def latent_masks(masks: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(masks, size=latents.shape[-2:], mode="area").clamp(0, 1)


def preview_conditioning(clip, settings: TrainSettings) -> PreviewConditioning | None:
    """The preview prompts (training prompt, then preview_prompt) and the empty negative, encoded once."""
    if not settings.preview_every:
        return None
    family = family_named(settings.model_family)
    rows = [text_conditioning(clip, p, family) for p in settings.preview_prompts]
    return PreviewConditioning.from_rows(rows, text_conditioning(clip, "", family))


def prepare_images(images, masks, resolution: int, bucket: tuple[int, int] | None = None, family=None) -> Photos:
    """Photos (H×W×C each, any sizes: a list, or an IMAGE batch BHWC) → the family's aspect bucket most of them are
    nearest to (or ``bucket``), each resized (antialiased) and cut around its subject's mask box by the trainer's
    own preprocessing (the same as `python -m training fit`); masks (H×W each, one per photo, or one MASK for
    all) likewise."""
    photos = list(images)
    per_photo_masks = None
    if masks is not None:
        masks = [masks] if torch.is_tensor(masks) and masks.dim() == 2 else list(masks)
        if len(masks) not in (1, len(photos)):
            raise ValueError(
                f"{NODE}: {len(masks)} masks for {len(photos)} images: give one mask per image (or one for all)"
            )
        masks = masks * len(photos) if len(masks) == 1 else masks
        per_photo_masks = []
        for photo, mask in zip(photos, masks):
            if tuple(mask.shape) != tuple(photo.shape[:2]):  # another size: stretched onto the photo first
                mask = torch.nn.functional.interpolate(mask[None, None].float(), size=photo.shape[:2], mode="bilinear")[
                    0, 0
                ]
            per_photo_masks.append(mask.float())
        if max(float(m.max()) for m in per_photo_masks) <= 0:
            raise ValueError(f"{NODE}: the subject mask is empty: connect a mask that covers the subject, or none")
    pixels, masks, crops = prepare(
        [p[..., :3].movedim(-1, 0) for p in photos], resolution, per_photo_masks, bucket, family
    )
    return Photos(pixels.movedim(1, -1), masks, crops)


def add_class_data(
    data: TrainingData, model, clip, vae, settings: TrainSettings, resolution: int, model_hash: str
) -> None:
    """Prior preservation: class images from the base model (cached), encoded like the subject photos."""
    images = class_images.class_images(
        model,
        clip,
        vae,
        prompt=settings.class_prompt,
        count=settings.prior_images,
        resolution=resolution,
        seed=settings.seed,
        model_hash=model_hash,
    )
    family = family_named(settings.model_family)
    bucket = tuple(int(v) * 8 for v in data.latents.shape[-2:])  # the subject's bucket: one shape for every batch
    pixels, _masks, crops = prepare_images(images, None, resolution, bucket, family)
    data.class_latents = model.model.process_latent_in(vae.encode(pixels)).float().cpu()
    class_cond = {**text_conditioning(clip, settings.class_prompt, family), **family.size_conditioning(crops[:1])}
    for name, value in class_cond.items():
        setattr(data, f"class_{name}", value)


def class_images_cached(settings: TrainSettings, resolution: int, model_hash: str) -> bool:
    return class_images.cache_path(
        class_images.cache_folder(), model_hash, settings.class_prompt, settings.prior_images, resolution, settings.seed
    ).exists()
