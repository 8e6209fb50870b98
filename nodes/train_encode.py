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


def prepare_images(
    images: torch.Tensor,
    mask: torch.Tensor | None,
    resolution: int,
    bucket: tuple[int, int] | None = None,
    family: ModelFamily | None = None,
) -> Photos:
    """IMAGE BHWC → the family's aspect bucket nearest the photos' (or ``bucket``), resized (antialiased) and cut
    around each subject's mask box by the trainer's own preprocessing (the same as `python -m training fit`);
    MASK BHW likewise."""
    b = images.shape[0]
    per_image_masks = None
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[None]
        if mask.shape[0] not in (1, b):
            raise ValueError(f"{NODE}: {mask.shape[0]} masks for {b} images: give one mask per image (or one for all)")
        mask = mask.expand(b, -1, -1) if mask.shape[0] == 1 else mask
        if tuple(mask.shape[-2:]) != tuple(images.shape[1:3]):  # another size: stretched onto the photo first
            mask = torch.nn.functional.interpolate(
                mask[:, None].float(), size=tuple(images.shape[1:3]), mode="bilinear"
            )[:, 0]
        if float(mask.max()) <= 0:
            raise ValueError(f"{NODE}: the subject mask is empty: connect a mask that covers the subject, or none")
        per_image_masks = list(mask.float())
    pixels, masks, crops = prepare(list(images[..., :3].movedim(-1, 1)), resolution, per_image_masks, bucket, family)
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
