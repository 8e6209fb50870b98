"""What TrainSubjectLoRA prepares and encodes in the graph for the trainer, with the wired VAE and CLIP (the
encoders inference will use): the photos in their aspect bucket, cut around the subject; their latents (flipped,
APT's views), masks at latent size and prompt embeddings; the class images; the preview prompts' conditioning."""

from __future__ import annotations

import torch

from ..training.augment import augmented_views
from ..training.preprocess import prepare
from ..training.preview import PreviewConditioning
from ..training.settings import TrainSettings
from ..training.trainer import TrainingData
from . import class_images

NODE = "TrainSubjectLoRA"


def encode(model, clip, vae, pixels, masks, time_ids, settings: TrainSettings) -> TrainingData:
    latent_format = model.model.process_latent_in  # the model's own latent scaling (SDXL: ×0.13025)
    latents = latent_format(vae.encode(pixels)).float().cpu()
    flipped = latent_format(vae.encode(pixels.flip(2))).float().cpu() if settings.flip else None
    cond, pooled = clip.encode_from_tokens(clip.tokenize(settings.prompt), return_pooled=True)
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
        time_ids=time_ids,
        prompt_embeds=cond.float().cpu(),
        pooled_prompt_embeds=pooled.float().cpu(),
        augmented_latents=augmented,
        augmented_masks=augmented_masks,
    )


def latent_masks(masks: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(masks, size=latents.shape[-2:], mode="area").clamp(0, 1)


def preview_conditioning(clip, settings: TrainSettings) -> PreviewConditioning | None:
    """The preview prompts (training prompt, then preview_prompt) and the empty negative, encoded once."""
    if not settings.preview_every:
        return None
    rows = [clip.encode_from_tokens(clip.tokenize(p), return_pooled=True) for p in settings.preview_prompts]
    negative, negative_pooled = clip.encode_from_tokens(clip.tokenize(""), return_pooled=True)
    return PreviewConditioning(
        torch.cat([c for c, _ in rows]).float().cpu(),
        torch.cat([p for _, p in rows]).float().cpu(),
        negative.float().cpu(),
        negative_pooled.float().cpu(),
    )


def prepare_images(images, masks, resolution: int, bucket: tuple[int, int] | None = None):
    """Photos (H×W×C each, any sizes: a list, or an IMAGE batch BHWC) → the SDXL aspect bucket most of them are
    nearest to (or ``bucket``), each resized (antialiased) and cut around its subject's mask box by the trainer's
    own preprocessing (the same as `python -m training fit`); masks (H×W each, one per photo, or one MASK for
    all) likewise. Returns (pixels N×h×w×C for the VAE, masks N×1×h×w or None, SDXL size/crop conditioning per
    photo)."""
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
    pixels, masks, crops = prepare([p[..., :3].movedim(-1, 0) for p in photos], resolution, per_photo_masks, bucket)
    time_ids = torch.tensor([crop.time_ids() for crop in crops], dtype=torch.float32)
    return pixels.movedim(1, -1), masks, time_ids


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
    bucket = tuple(int(v) * 8 for v in data.latents.shape[-2:])  # the subject's bucket: one shape for every batch
    pixels, _masks, time_ids = prepare_images(images, None, resolution, bucket)
    data.class_latents = model.model.process_latent_in(vae.encode(pixels)).float().cpu()
    cond, pooled = clip.encode_from_tokens(clip.tokenize(settings.class_prompt), return_pooled=True)
    data.class_prompt_embeds, data.class_pooled_prompt_embeds = cond.float().cpu(), pooled.float().cpu()
    data.class_time_ids = time_ids[:1]


def class_images_cached(settings: TrainSettings, resolution: int, model_hash: str) -> bool:
    return class_images.cache_path(
        class_images.cache_folder(), model_hash, settings.class_prompt, settings.prior_images, resolution, settings.seed
    ).exists()
