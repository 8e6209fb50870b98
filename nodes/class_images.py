"""Prior preservation's class images for TrainSubjectLoRA, drawn in the graph by ComfyUI's own sampler with
the wired MODEL/CLIP/VAE ('a photo of <class>', no token), cached by model hash, prompt, count, size and seed.

The cache lives in ComfyUI's temp folder (cleared when ComfyUI restarts); images are
kept as 8-bit pixels, the way DreamBooth keeps its class folder, and encoded like the subject photos.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import comfy.model_management
import comfy.sample
import comfy.utils

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
STEPS, CFG, SAMPLER, SCHEDULER = 30, 5.0, "euler", "normal"  # a plain, widely available sampling setup
CHUNK = 4  # images per sampling batch


def cache_key(model_hash: str, prompt: str, count: int, resolution: int, seed: int) -> str:
    text = f"{model_hash}|{prompt}|{count}|{resolution}|{seed}|{STEPS}|{CFG}|{SAMPLER}|{SCHEDULER}"
    return hashlib.sha256(text.encode()).hexdigest()


def _conditioning(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _draw(model, clip, vae, prompt: str, count: int, resolution: int, seed: int) -> torch.Tensor:
    """``count`` images (BHWC, 0..1) sampled with the base weights; chunk i uses seed + its first index."""
    if model.patches:  # class images come from the base model the trainer starts from, not from a LoRA'd one
        model = model.clone()
        model.patches = {}
    positive, negative = _conditioning(clip, prompt), _conditioning(clip, "")
    pbar = comfy.utils.ProgressBar(count)
    images = []
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        latent = torch.zeros(n, 4, resolution // 8, resolution // 8)
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        noise = comfy.sample.prepare_noise(latent, seed + start)
        samples = comfy.sample.sample(model, noise, STEPS, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                                      seed=seed + start, disable_pbar=True)
        images.append(vae.decode(samples)[..., :3].float().clamp(0, 1).cpu())
        pbar.update_absolute(start + n, count)  # raises when the user cancels
    return torch.cat(images)


def class_images(model, clip, vae, *, prompt: str, count: int, resolution: int, seed: int, model_hash: str,
                 cache_dir: Path) -> torch.Tensor:
    """The class images (BHWC float 0..1), from the cache when model, prompt, count, size and seed match."""
    path = cache_dir / f"class-{cache_key(model_hash, prompt, count, resolution, seed)[:20]}.safetensors"
    if path.exists():
        log.info("%s: reusing %d cached class images of '%s'", NODE, count, prompt)
        return load_file(str(path))["images"].float() / 255.0
    log.info("%s: drawing %d class images of '%s' for prior preservation", NODE, count, prompt)
    images = _draw(model, clip, vae, prompt, count, resolution, seed)
    pixels8 = (images * 255).round().to(torch.uint8).contiguous()
    tmp = path.with_name(path.name + ".partial")
    save_file({"images": pixels8}, str(tmp))
    os.replace(tmp, path)
    comfy.model_management.soft_empty_cache()
    return pixels8.float() / 255.0
