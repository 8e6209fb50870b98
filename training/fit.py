"""`python -m training fit`: encode a folder of subject photos with diffusers' own VAE and text encoders (the
pipeline of the model's family: training/families), then train with the same function the node's child process
runs."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .families import ModelFamily, family_named, family_of_file
from .preprocess import Crop, prepare
from .settings import TrainSettings
from .trainer import TrainingData

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
CLASS_GUIDANCE = 5.0  # classifier-free guidance of the class images (prior preservation)


def load_pipeline(model: str, config: str | None = None, family: ModelFamily | None = None):
    """The family's diffusers pipeline (default: the one ``model`` is) from a diffusers folder or a single-file
    checkpoint (``config``: a diffusers folder or Hub id giving the component configs; needed offline, since
    single files carry none)."""
    import diffusers

    path = Path(model)
    family = family or family_of_file(path)
    pipeline = getattr(diffusers, family.diffusers_pipeline)
    extra = family.pipeline_kwargs()
    if path.is_dir():
        # local_files_only everywhere: the trainer never downloads (a missing config is an error, not a fetch).
        return pipeline.from_pretrained(str(path), dtype=torch.float32, local_files_only=True, **extra)
    if path.suffix == ".safetensors" and path.is_file():
        kwargs = {"config": config} if config else {}
        return pipeline.from_single_file(str(path), dtype=torch.float32, local_files_only=True, **kwargs, **extra)
    raise ValueError(f"--model {model}: expected a diffusers folder (with model_index.json) or a .safetensors file")


def load_images(folder: str, resolution: int, family: ModelFamily | None = None) -> tuple[torch.Tensor, list[Crop]]:
    """Images resized (antialiased) and cut to one of the family's aspect buckets (the one most photos are
    nearest to) by the same preprocessing as the node: (N×3×h×w in −1..1, where each crop came from)."""
    pixels, crops, _masks = load_photos(folder, resolution, family=family)
    return pixels, crops


def load_photos(
    folder: str, resolution: int, mask_folder: str | None = None, family: ModelFamily | None = None
) -> tuple[torch.Tensor, list[Crop], torch.Tensor | None]:
    """:func:`load_images`, each photo at its own size, with its subject mask from ``mask_folder`` (the file with
    the photo's name stem, any image format, read as grayscale: ≥ 0.5 is the subject; another size is stretched
    onto the photo): the crop keeps the subject's box whole and the loss is weighted on it. Also returns the
    masks cut like the photos (N×1×h×w in 0..1) or None."""
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {folder}: no {sorted(IMAGE_SUFFIXES)} files found")
    photos = []
    for file in files:
        with Image.open(file) as im:
            photos.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1))
    masks = None if mask_folder is None else _load_masks(mask_folder, files, photos)
    pixels, cut_masks, crops = prepare(photos, resolution, masks, family=family)
    return pixels * 2.0 - 1.0, crops, cut_masks


def _load_masks(folder: str, photo_files: list[Path], photos: list[torch.Tensor]) -> list[torch.Tensor]:
    from PIL import Image

    by_stem = {p.stem: p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [f.name for f in photo_files if f.stem not in by_stem]
    if missing:
        raise ValueError(f"--masks {folder}: no mask for {', '.join(missing)} (a mask is named like its photo)")
    masks = []
    for file, photo in zip(photo_files, photos):
        with Image.open(by_stem[file.stem]) as im:
            mask = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
        if tuple(mask.shape) != tuple(photo.shape[-2:]):
            mask = torch.nn.functional.interpolate(mask[None, None], size=photo.shape[-2:], mode="bilinear")[0, 0]
        if float(mask.max()) < 0.5:
            raise ValueError(f"--masks {folder}: the mask of {file.name} is empty (white marks the subject)")
        masks.append(mask)
    return masks


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, seed: int, batch: int = 4) -> torch.Tensor:
    """VAE latents scaled for the UNet (``AutoencoderKL`` samples from a seeded generator; TAESD is exact)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for chunk in pixels.split(batch):
        encoded = vae.encode(chunk.to(vae.device, vae.dtype))
        if hasattr(encoded, "latent_dist"):
            dist = encoded.latent_dist
            sample = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
        else:
            sample = encoded.latents
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        out.append(((sample - shift) * vae.config.scaling_factor).float().cpu())
    return torch.cat(out)


def encode_subject(
    pipe, images: str, resolution: int, settings: TrainSettings, masks: str | None = None
) -> TrainingData:
    """Encodes the photos (and their flipped copies when ``settings.flip``), the training prompt and the crops'
    conditioning, as the family declares them; ``masks``: a folder of subject masks (:func:`load_photos`), brought
    to the latents' size."""
    from .augment import augmented_views

    family = family_named(settings.model_family)
    pixels, crops, pixel_masks = load_photos(images, resolution, masks, family)
    latents = encode_latents(pipe.vae, pixels, settings.seed)
    latent_masks = None if pixel_masks is None else _latent_masks(pixel_masks, latents)
    flipped = encode_latents(pipe.vae, pixels.flip(-1), settings.seed) if settings.flip else None
    augmented = augmented_masks = None
    if settings.apt_augment:
        views, view_masks = augmented_views(pixels, settings.apt_views, settings.seed, pixel_masks)
        augmented = encode_latents(pipe.vae, views, settings.seed)
        if view_masks is not None:
            augmented_masks = _latent_masks(view_masks, augmented)
    return TrainingData(
        latents=latents,
        latents_flipped=flipped,
        augmented_latents=augmented,
        masks=latent_masks,
        augmented_masks=augmented_masks,
        photo_crops=torch.tensor([crop.time_ids() for crop in crops], dtype=torch.int64),
        **family.encode_prompt(pipe, settings.prompt),
        **family.size_conditioning(crops),
    )


def _latent_masks(masks: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Pixel masks area-averaged to the latents' size, as the node does (nodes/train_encode.py)."""
    return torch.nn.functional.interpolate(masks, size=latents.shape[-2:], mode="area").clamp(0, 1)


def class_images(
    pipe,
    settings: TrainSettings,
    resolution: int,
    *,
    model_hash: str,
    steps: int = 30,
    cache_dir: str | None = None,
    batch: int = 4,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Prior preservation's class images ('a photo of <class>'), drawn by the base pipeline at ``size`` (h, w;
    default R×R): N×3×h×w in −1..1. Image i uses seed settings.seed + i. With ``cache_dir`` they are kept as PNGs named by a key of model
    hash, prompt, size, seed, steps and guidance, and reused (only missing ones are drawn)."""
    from PIL import Image

    height, width = size or (resolution, resolution)
    shape = resolution if (height, width) == (resolution, resolution) else f"{height}x{width}"  # square: old keys
    key = hashlib.sha256(
        f"{model_hash}|{settings.class_prompt}|{shape}|{settings.seed}|{steps}|{CLASS_GUIDANCE}".encode()
    ).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    images = _cached_class_images(folder, key, settings.prior_images) if folder is not None else {}
    missing = [i for i in range(settings.prior_images) if i not in images]
    if missing:
        log.info(
            "drawing %d class images of '%s' (%d cached)",
            len(missing),
            settings.class_prompt,
            settings.prior_images - len(missing),
        )
    for start in range(0, len(missing), batch):
        chunk = missing[start : start + batch]
        generators = [torch.Generator(pipe.device).manual_seed(settings.seed + i) for i in chunk]
        with torch.no_grad():
            out = pipe(
                [settings.class_prompt] * len(chunk),
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=CLASS_GUIDANCE,
                generator=generators,
                output_type="np",
            ).images
        for i, image in zip(chunk, out):
            image8 = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
            images[i] = torch.from_numpy(image8.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
            if folder is not None:
                tmp = folder / f".class_{key}_{i:04d}.png.partial"
                Image.fromarray(image8).save(tmp, format="PNG")
                os.replace(tmp, folder / f"class_{key}_{i:04d}.png")
    return torch.stack([images[i] for i in range(settings.prior_images)])


def _cached_class_images(folder: Path, key: str, count: int) -> dict[int, torch.Tensor]:
    """The class images of ``key`` already in ``folder``, by index: 3×h×w in −1..1."""
    from PIL import Image

    images = {}
    for i in range(count):
        file = folder / f"class_{key}_{i:04d}.png"
        if file.exists():
            with Image.open(file) as im:
                images[i] = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(
                    2, 0, 1
                )
    return images


def add_class_data(pipe, data: TrainingData, settings: TrainSettings, resolution: int, **kwargs) -> TrainingData:
    """Draws (or reuses) the class images and encodes them like the subject photos."""
    size = tuple(int(v) * 8 for v in data.latents.shape[-2:])  # the photos' bucket: one shape for every batch
    pixels = class_images(pipe, settings, resolution, size=size, **kwargs)
    data.class_latents = encode_latents(pipe.vae, pixels, settings.seed)
    family = family_named(settings.model_family)
    h, w = pixels.shape[-2:]
    class_cond = {**family.encode_prompt(pipe, settings.class_prompt), **family.square_size_conditioning(h, w, 1)}
    for name, value in class_cond.items():
        setattr(data, f"class_{name}", value)
    return data


def fit(
    model: str,
    images: str,
    out: str,
    settings: TrainSettings,
    *,
    resolution: int,
    config: str | None = None,
    progress=None,
    class_dir: str | None = None,
    class_steps: int = 30,
    masks: str | None = None,
) -> Path:
    """Loads the model, encodes the subject once, frees the VAE and text encoders, trains, writes the LoRA."""
    from .devices import empty_cache
    from .job import finish
    from .trainer import resolve_device, train
    from .weights import fingerprint

    pipe = load_pipeline(model, config, family_named(settings.model_family))
    device = resolve_device(settings)
    pipe.vae.to(device)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):  # whichever the family's pipeline has
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    data = encode_subject(pipe, images, resolution, settings, masks)
    unet = pipe.unet
    base_hash = fingerprint(unet.state_dict())
    if settings.prior_images:
        pipe.unet.to(device)
        add_class_data(pipe, data, settings, resolution, model_hash=base_hash, steps=class_steps, cache_dir=class_dir)
    preview = _previewer(pipe, settings, data, Path(out)) if settings.preview_every else None
    vae = pipe.vae  # kept (small) to decode the previews at the end
    del pipe  # the text encoders are not needed any more: training runs on the cached tensors
    empty_cache(device)
    from .checkpoint import state_path
    from .job import CheckpointWriter

    extra = {"image_alchemy.source_model": Path(model).name}
    writer = CheckpointWriter(settings, data, output=out, base_model_hash=base_hash, extra_metadata=extra)
    resume = state_path(settings.resume_from) if settings.resume_from else None
    result = train(unet, data, settings, progress, checkpoint=writer, resume=resume, preview=preview)
    if preview is not None:
        save_preview_grid(vae, preview.folder, Path(out))
    return finish(result, settings, data, output=out, base_model_hash=base_hash, extra_metadata=extra)


def _previewer(pipe, settings: TrainSettings, data: TrainingData, out: Path):
    import tempfile

    from .preview import PreviewConditioning, Previewer

    family = family_named(settings.model_family)
    rows = [family.encode_prompt(pipe, p) for p in settings.preview_prompts]
    cond = PreviewConditioning.from_rows(rows, family.encode_prompt(pipe, ""))
    out.parent.mkdir(parents=True, exist_ok=True)  # the LoRA's folder may not exist yet
    folder = Path(tempfile.mkdtemp(prefix=".previews-", dir=out.parent))
    return Previewer(settings, cond, tuple(data.latents.shape[1:]), folder)


@torch.no_grad()
def save_preview_grid(vae, folder: Path, out: Path) -> Path | None:
    """``<out>-previews.png``: one row per preview step, one column per prompt, decoded with the model's VAE."""
    import shutil

    from PIL import Image

    from .preview import read_previews

    rows = []
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    for _step, latents in read_previews(folder):
        decoded = vae.decode((latents / vae.config.scaling_factor + shift).to(vae.device, vae.dtype)).sample
        images = ((decoded.float().cpu() + 1) / 2).clamp(0, 1)  # P×3×H×W
        rows.append(torch.cat(list(images), dim=-1))
    shutil.rmtree(folder, ignore_errors=True)
    if not rows:
        return None
    grid = (torch.cat(rows, dim=-2).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = out.with_name(out.stem + "-previews.png")
    tmp = path.with_name(path.name + ".partial")
    Image.fromarray(grid).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
