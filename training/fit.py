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
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {folder}: no {sorted(IMAGE_SUFFIXES)} files found")
    photos = []
    for file in files:
        with Image.open(file) as im:
            photos.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1))
    pixels, _masks, crops = prepare(photos, resolution, family=family)
    return pixels * 2.0 - 1.0, crops


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


def encode_subject(pipe, images: str, resolution: int, settings: TrainSettings) -> TrainingData:
    """Encodes the photos (and their flipped copies when ``settings.flip``), the training prompt and the crops'
    conditioning, as the family declares them."""
    from .augment import augmented_views

    family = family_named(settings.model_family)
    pixels, crops = load_images(images, resolution, family)
    latents = encode_latents(pipe.vae, pixels, settings.seed)
    flipped = encode_latents(pipe.vae, pixels.flip(-1), settings.seed) if settings.flip else None
    augmented = None
    if settings.apt_augment:
        augmented = encode_latents(
            pipe.vae, augmented_views(pixels, settings.apt_views, settings.seed)[0], settings.seed
        )
    return TrainingData(
        latents=latents,
        latents_flipped=flipped,
        augmented_latents=augmented,
        **family.encode_prompt(pipe, settings.prompt),
        **family.size_conditioning(crops),
    )


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
) -> Path:
    """Loads the model, encodes the subject once, frees the VAE and text encoders, trains, writes the LoRA."""
    from .job import finish
    from .trainer import resolve_device, train
    from .weights import fingerprint

    pipe = load_pipeline(model, config, family_named(settings.model_family))
    device = resolve_device(settings)
    pipe.vae.to(device)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):  # whichever the family's pipeline has
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    data = encode_subject(pipe, images, resolution, settings)
    unet = pipe.unet
    base_hash = fingerprint(unet.state_dict())
    if settings.prior_images:
        pipe.unet.to(device)
        add_class_data(pipe, data, settings, resolution, model_hash=base_hash, steps=class_steps, cache_dir=class_dir)
    preview = _previewer(pipe, settings, data, Path(out)) if settings.preview_every else None
    vae = pipe.vae  # kept (small) to decode the previews at the end
    del pipe  # the text encoders are not needed any more: training runs on the cached tensors
    if device.type == "cuda":
        torch.cuda.empty_cache()
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
