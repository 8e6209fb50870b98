"""`python -m training fit`: encode a folder of subject photos with diffusers' own VAE and text encoders, then
train with the same function the node's child process runs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .settings import TrainSettings
from .trainer import TrainingData

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_pipeline(model: str, config: str | None = None):
    """A diffusers SDXL pipeline from a diffusers folder or a single-file checkpoint (``config``: a diffusers
    folder or Hub id giving the component configs; needed offline, since single files carry none)."""
    from diffusers import StableDiffusionXLPipeline

    path = Path(model)
    if path.is_dir():
        # local_files_only everywhere: the trainer never downloads (a missing config is an error, not a fetch).
        return StableDiffusionXLPipeline.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    if path.suffix == ".safetensors" and path.is_file():
        kwargs = {"config": config} if config else {}
        return StableDiffusionXLPipeline.from_single_file(str(path), dtype=torch.float32, local_files_only=True,
                                                          **kwargs)
    raise ValueError(f"--model {model}: expected a diffusers folder (with model_index.json) or a .safetensors file")


def load_images(folder: str, resolution: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Images resized (shorter side = resolution) and centre-cropped to resolution²: (N×3×R×R in −1..1,
    per image SDXL size/crop conditioning [orig_h, orig_w, crop_top, crop_left, R, R])."""
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {folder}: no {sorted(IMAGE_SUFFIXES)} files found")
    pixels, time_ids = [], []
    for file in files:
        with Image.open(file) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = resolution / min(w, h)
            rw, rh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            im = im.resize((rw, rh), Image.Resampling.BICUBIC)
            left, top = (rw - resolution) // 2, (rh - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            pixels.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
            time_ids.append([h, w, top, left, resolution, resolution])
    return torch.stack(pixels), time_ids


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
    """Encodes the photos (and their flipped copies when ``settings.flip``) and the training prompt."""
    pixels, time_ids = load_images(images, resolution)
    latents = encode_latents(pipe.vae, pixels, settings.seed)
    flipped = encode_latents(pipe.vae, pixels.flip(-1), settings.seed) if settings.flip else None
    with torch.no_grad():
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(settings.prompt, device=pipe.device,
                                                         num_images_per_prompt=1, do_classifier_free_guidance=False)
    return TrainingData(latents=latents, latents_flipped=flipped, prompt_embeds=prompt_embeds.float().cpu(),
                        pooled_prompt_embeds=pooled.float().cpu(),
                        time_ids=torch.tensor(time_ids, dtype=torch.float32))


def fit(model: str, images: str, out: str, settings: TrainSettings, *, resolution: int, config: str | None = None,
        progress=None) -> Path:
    """Loads the model, encodes the subject once, frees the VAE and text encoders, trains, writes the LoRA."""
    from .job import finish
    from .trainer import resolve_device, train
    from .unet import state_dict_hash

    pipe = load_pipeline(model, config)
    device = resolve_device(settings)
    pipe.vae.to(device)
    pipe.text_encoder.to(device)
    pipe.text_encoder_2.to(device)
    data = encode_subject(pipe, images, resolution, settings)
    unet = pipe.unet
    base_hash = state_dict_hash(unet.state_dict())
    del pipe  # the VAE and text encoders are not needed any more: training runs on the cached tensors
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result = train(unet, data, settings, progress)
    return finish(result, settings, data, output=out, base_model_hash=base_hash,
                  extra_metadata={"image_alchemy.source_model": Path(model).name})
