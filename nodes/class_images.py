"""Prior preservation's class images for TrainSubjectLoRA, drawn in the graph by ComfyUI's own sampler with
the wired MODEL/CLIP/VAE ('a photo of <class>', no token), cached by model hash, prompt, count, size and seed.

The cache lives in ``models/image_alchemy/class_cache`` (ComfyUI's temp folder is emptied at every start and exit,
and drawing 100 class images at 1024² costs minutes on a GPU); images are kept as 8-bit pixels, the way DreamBooth
keeps its class folder, and encoded like the subject photos. The folder is kept under ``CACHE_MAX_BYTES``: after
a new set is written, the sets used least recently (a cache hit counts as a use) are deleted until it fits.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import comfy.model_management
import comfy.sample
import comfy.utils
import folder_paths
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
STEPS, CFG, SAMPLER, SCHEDULER = 30, 5.0, "euler", "normal"  # a plain, widely available sampling setup
CHUNK = 4  # images per sampling batch
CACHE_MAX_BYTES = 2 * 2**30  # ~7 sets of 100 images at 1024² (3 MB each as 8-bit pixels)


def cache_key(model_hash: str, prompt: str, count: int, resolution: int, seed: int) -> str:
    text = f"{model_hash}|{prompt}|{count}|{resolution}|{seed}|{STEPS}|{CFG}|{SAMPLER}|{SCHEDULER}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_folder() -> Path:
    path = Path(folder_paths.models_dir) / "image_alchemy" / "class_cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path(folder: Path, model_hash: str, prompt: str, count: int, resolution: int, seed: int) -> Path:
    return folder / f"class-{cache_key(model_hash, prompt, count, resolution, seed)[:20]}.safetensors"


def evict(folder: Path, keep: Path, max_bytes: int = CACHE_MAX_BYTES) -> list[Path]:
    """Deletes the least recently used sets (oldest modification time) until the folder holds at most
    ``max_bytes``; ``keep`` (the set just written) stays whatever its size. Returns the deleted files."""
    sets = []
    for path in folder.glob("class-*.safetensors"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted meanwhile by another run
            continue
        sets.append((stat.st_mtime_ns, stat.st_size, path))
    total, deleted = sum(size for _, size, _ in sets), []
    for _mtime, size, path in sorted(sets, key=lambda entry: entry[:2]):
        if total <= max_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted


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
        samples = comfy.sample.sample(
            model,
            noise,
            STEPS,
            CFG,
            SAMPLER,
            SCHEDULER,
            positive,
            negative,
            latent,
            seed=seed + start,
            disable_pbar=True,
        )
        images.append(vae.decode(samples)[..., :3].float().clamp(0, 1).cpu())
        pbar.update_absolute(start + n, count)  # raises when the user cancels
    return torch.cat(images)


def class_images(
    model,
    clip,
    vae,
    *,
    prompt: str,
    count: int,
    resolution: int,
    seed: int,
    model_hash: str,
    cache_dir: Path | None = None,
    max_bytes: int = CACHE_MAX_BYTES,
) -> torch.Tensor:
    """The class images (BHWC float 0..1), from the cache when model, prompt, count, size and seed match."""
    folder = cache_dir if cache_dir is not None else cache_folder()
    path = cache_path(folder, model_hash, prompt, count, resolution, seed)
    if path.exists():
        log.info("%s: reusing %d cached class images of '%s'", NODE, count, prompt)
        images = load_file(str(path))["images"].float() / 255.0
        os.utime(path)  # used now: the last to be evicted
        return images
    log.info("%s: drawing %d class images of '%s' for prior preservation", NODE, count, prompt)
    images = _draw(model, clip, vae, prompt, count, resolution, seed)
    pixels8 = (images * 255).round().to(torch.uint8).contiguous()
    tmp = path.with_name(path.name + ".partial")
    save_file({"images": pixels8}, str(tmp))
    os.replace(tmp, path)
    for old in evict(folder, path, max_bytes):
        log.info("%s: class-image cache over %.1f GiB: removed %s", NODE, max_bytes / 2**30, old.name)
    comfy.model_management.soft_empty_cache()
    return pixels8.float() / 255.0
