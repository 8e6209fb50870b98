"""TrainSubjectLoRA's start-up: the "already trained" key from the node's inputs, before anything slow runs.

The key (recorded in the LoRA's metadata) covers everything the LoRA's bytes depend on, each in its cheap form:
the UNet's sampled fingerprint, the settings, the photos and masks as wired (hashing them costs less than
resizing them, and the training squares are a function of them and the resolution), the VAE's identity (sampled fingerprint of its weights, any patches,
its dtype and device type) and the CLIP's (sampled fingerprint of its weights, any patches such as a LoRA, the
layer it is read at, and the prompt's tokens, embeddings included). So a cache hit runs neither encoder (the VAE
over 4 photos at 1024² takes tens of seconds on a CPU, SDXL's two text encoders a few), and a miss learns it
before encoding, so the trainer process can start right away (training/staged.py) and get ready while the node
encodes. Like the UNet's fingerprint, the sampled ones cannot see an edit confined to unsampled weights.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from ..training.settings import TrainSettings
from ..training.weights import fingerprint

KEY_FORMAT = "image_alchemy.train_key/2"
_MAX_DEPTH = 6


def _update(digest, value, depth: int = 0) -> None:
    """Feeds a patch entry (tensors, numbers, strings, containers, adapter objects) into ``digest``."""
    if depth > _MAX_DEPTH:
        digest.update(b"<deep>")
    elif isinstance(value, torch.Tensor):
        digest.update(fingerprint({"t": value}).encode())
    elif isinstance(value, (str, int, float, bool, type(None))):
        digest.update(repr(value).encode())
    elif isinstance(value, dict):
        for k in sorted(value, key=repr):
            digest.update(repr(k).encode())
            _update(digest, value[k], depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _update(digest, item, depth + 1)
    else:  # e.g. ComfyUI's LoRA adapter objects: their type and fields
        digest.update(type(value).__qualname__.encode())
        _update(digest, dict(getattr(value, "__dict__", {})), depth + 1)


def vae_identity(vae) -> str:
    """What decides the latents the VAE gives for given pixels, apart from the pixels."""
    digest = hashlib.sha256(fingerprint(vae.first_stage_model.state_dict()).encode())
    patcher = getattr(vae, "patcher", None)
    _update(digest, dict(getattr(patcher, "patches", None) or {}))
    digest.update(f"|{getattr(vae, 'vae_dtype', '')}|{torch.device(getattr(vae, 'device', 'cpu')).type}".encode())
    return digest.hexdigest()


def clip_identity(clip, prompt: str) -> str:
    """What decides the text conditioning the CLIP gives for ``prompt``."""
    digest = hashlib.sha256(fingerprint(clip.cond_stage_model.state_dict()).encode())
    _update(digest, dict(getattr(clip.patcher, "patches", None) or {}))
    digest.update(f"|{type(clip.cond_stage_model).__qualname__}|{getattr(clip, 'layer_idx', None)}|".encode())
    _update(digest, clip.tokenize(prompt))
    return digest.hexdigest()


def input_key(
    model_hash: str, settings: TrainSettings, vae, clip, tensors: dict[str, torch.Tensor], resolution: int
) -> str:
    """The key of a training run; ``tensors``: the node's IMAGE and MASK inputs, each a tensor or a list of them
    (None when not wired)."""
    # Gradient checkpointing trades memory for time without changing the result; under "auto" it follows free
    # VRAM, so it stays out of the key or the same inputs would retrain whenever free memory differs. Checkpoints
    # do not change the result either, nor does resuming (it refuses a state of other settings or photos), nor
    # previews (drawn from their own generator). docs/DESIGN.md §5.4
    same_result = dataclasses.replace(
        settings,
        gradient_checkpointing=False,
        save_every=0,
        resume_from="",
        preview_every=0,
        preview_prompt="",
        preview_steps=1,
    )
    digest = hashlib.sha256(
        f"{KEY_FORMAT}|{model_hash}|{same_result.to_json()}|{resolution}|{vae_identity(vae)}|"
        f"{clip_identity(clip, settings.prompt)}".encode()
    )
    for name, value in sorted(tensors.items()):
        # A batch is hashed as before photos could come as a list, so a graph wired the old way keeps its key.
        for tensor in value if isinstance(value, (list, tuple)) else [value]:
            if tensor is None:
                continue
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"|{tensor.dtype}".encode())
            digest.update(f"|{name}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.numpy())
    return digest.hexdigest()
