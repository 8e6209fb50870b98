"""The images RareTokenPicker scores: one per seed, sampled as KSampler would with that seed, and kept on disk
keyed by the models' content fingerprints, the prompt and the sampling settings (``alchemy.fingerprint_cache``)."""

from __future__ import annotations

import os
import time

import comfy.model_management
import comfy.sample
import folder_paths
import numpy as np
import torch

from ..alchemy import fingerprint_cache, layout

CACHE_SUBDIR = os.path.join("image_alchemy", "token_cache")
# Seeds sampled together: with CFG the UNet runs twice this batch, so 8 seeds at 1024² would hold 16 SDXL
# activations at once; chunks of 4 halve that. The noise is drawn per seed: the images do not depend on chunking.
SEED_BATCH = 4


def cache_directory() -> str:
    # The user folder survives restarts (ComfyUI empties temp/ at every start).
    return os.path.join(folder_paths.get_user_directory(), CACHE_SUBDIR)


def patcher_fingerprint(patcher) -> str:
    """Weights as loaded from disk (ComfyUI keeps them in ``backup`` while patched in place) plus the pending
    patches (LoRAs, with strengths), object patches and model options, so a LoRA'd clone hashes differently."""
    sd = patcher.model_state_dict()
    named = [(k, patcher.backup[k].weight if k in patcher.backup else v) for k, v in sd.items()]
    return fingerprint_cache.fingerprint_value(
        [fingerprint_cache.fingerprint_tensors(named), patcher.patches, patcher.object_patches, patcher.model_options]
    )


def models_fingerprint(model, clip, vae) -> str:
    vae_sd = vae.first_stage_model.state_dict()
    return fingerprint_cache.fingerprint_value(
        [
            patcher_fingerprint(model),
            patcher_fingerprint(clip.patcher),
            getattr(clip, "layer_idx", None),
            fingerprint_cache.fingerprint_tensors(vae_sd.items()),
        ]
    )


def interrupt_check(*_args):
    comfy.model_management.throw_exception_if_processing_interrupted()


def sample_seeds(
    model,
    clip,
    vae,
    prompt: str,
    negative,
    seeds: list[int],
    width: int,
    height: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
) -> np.ndarray:
    """One image per seed, as KSampler would make with that seed; up to SEED_BATCH seeds share one batch."""
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
    out = []
    for start in range(0, len(seeds), SEED_BATCH):
        chunk = seeds[start : start + SEED_BATCH]
        latent = torch.zeros(
            [len(chunk), 4, height // 8, width // 8], device=comfy.model_management.intermediate_device()
        )
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        # Per-seed noise, so image i is the batch-1 KSampler image for seeds[i] (ancestral samplers aside).
        noise = torch.cat([comfy.sample.prepare_noise(latent[i : i + 1], seed) for i, seed in enumerate(chunk)])
        samples = comfy.sample.sample(
            model,
            noise,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            latent,
            denoise=1.0,
            callback=interrupt_check,
            disable_pbar=True,
            seed=chunk[0],
        )
        images = vae.decode(samples)
        images = images.reshape(-1, *images.shape[-3:])  # video VAEs add a frame axis
        # Quantized like a saved PNG, so a fresh run and a cache hit score the very same pixels.
        out.append(np.round(layout.to_numpy(images.clamp(0, 1)) * 255.0) / 255.0)
    return np.concatenate(out)


def image_embeddings(clip_vision, images: np.ndarray) -> np.ndarray:
    out = clip_vision.encode_image(layout.to_torch(images).float())
    embeds = out["image_embeds"] if out["image_embeds"] is not None else out["last_hidden_state"][:, 0]
    return layout.to_numpy(embeds)


class CandidateImages:
    """``images_for(prompt)``: the seeds' images for one prompt, from the cache when ``use_cache`` and they are
    there, else sampled (and stored when ``use_cache``)."""

    def __init__(self, model, clip, vae, seeds, width, height, steps, cfg, sampler_name, scheduler, use_cache):
        self.model, self.clip, self.vae, self.use_cache = model, clip, vae, use_cache
        self.sampling = (seeds, width, height, steps, cfg, sampler_name, scheduler)
        self.settings = dict(
            seeds=seeds, width=width, height=height, steps=steps, cfg=cfg, sampler=sampler_name, scheduler=scheduler
        )
        self.cache = fingerprint_cache.ImageCache(cache_directory())
        self.models_fp = models_fingerprint(model, clip, vae)
        self.negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))

    def images_for(self, prompt: str) -> tuple[np.ndarray, float | None]:
        """(images, seconds spent sampling; None when served from the cache)."""
        key = fingerprint_cache.cache_key(models=self.models_fp, prompt=prompt, **self.settings)
        images = self.cache.load(key) if self.use_cache else None
        if images is not None:
            return images, None
        start = time.perf_counter()
        images = sample_seeds(self.model, self.clip, self.vae, prompt, self.negative, *self.sampling)
        spent = time.perf_counter() - start
        if self.use_cache:
            self.cache.store(key, images, {"prompt": prompt, "settings": repr(self.settings)})
        return images, spent
