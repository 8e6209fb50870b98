"""The toy world's model files (the real formats and architectures) and the in-memory pipeline built from them.

Files, as ComfyUI's own classes and our trainer read them (the layout of scripts/devkit/tiny_models/factory.py):
- ``unet.safetensors``: SDXL UNet, LDM layout, ComfyUI ``unet_config`` in the metadata (``tiny_sdxl.unet_config``);
- ``clip.safetensors``: SDXL's two text encoders (ComfyUI layout), trained with the UNet;
- ``taesd.safetensors``: a TAESD VAE. Its ``vae_scale`` is SDXL's latent scale (0.13025), as ComfyUI sets it for
  taesdxl: ComfyUI's SDXL latent format multiplies by that scale again, so the UNet sees the encoder's own
  output in ComfyUI, and in diffusers (``AutoencoderTiny`` with scaling factor 1) alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_models import factory
from tiny_models import pipeline as tiny_pipeline

from . import training_names

# The tiny SDXL architecture, file names and ComfyUI loader set-up are the tiny-model factory's (scripts/devkit/).
UNET_PREFIX = factory.UNET_PREFIX
UNET_FILE, CLIP_FILE, VAE_FILE = factory.UNET_FILE, factory.CLIP_FILE, factory.VAE_FILE
SDXL_LATENT_SCALE = tiny_pipeline.SDXL_LATENT_SCALE
LATENT_GAIN = 3.0  # the encoder's start: latent = 3·(8×8 mean colour − 0.5), within the decoder's tanh clamp

# The tiny SDXL UNet at twice the tests' width (64 base channels): at the tests' 32 about a fifth of the seeds
# still decoded to noise after 3 000 steps; the width is in the file's metadata, which every loader reads.
UNET_CONFIG = {**factory.TINY_UNET_CONFIG, "model_channels": 64}
CLIP_L_CONFIG, CLIP_G_CONFIG = factory.TINY_CLIP_L_CONFIG, factory.TINY_CLIP_G_CONFIG
use_comfyui = factory.use_comfyui
seeded_fill = factory.seeded_fill
clip_state_dict = factory.tiny_clip_state_dict  # the two text encoders, seeded (ComfyUI layout)


def initial_unet_ldm(seed: int) -> dict[str, torch.Tensor]:
    """The untrained UNet, LDM keys without prefix (ComfyUI's UNetModel defines the layout); the output conv
    starts at zero (as real checkpoints are initialised)."""
    unet = {
        k[len(UNET_PREFIX) :]: v.detach().clone() for k, v in factory.tiny_unet_state_dict(seed, UNET_CONFIG).items()
    }
    with torch.no_grad():
        unet["out.2.weight"].zero_()
        unet["out.2.bias"].zero_()
    return unet


def _identity(conv: torch.nn.Conv2d, channels: int, value: float = 1.0, taps=((1, 1),)) -> None:
    for c in range(channels):
        for ty, tx in taps:
            conv.weight[c, c, ty, tx] = value


def initial_taesd(seed: int):
    """ComfyUI's TAESD set up as an exact 8× mean-colour encoder and a nearest-upsampling decoder: residual
    blocks start as identities (last conv zero, the others small random so they can learn). Training the
    decoder from here learns the world's shapes; the encoder stays this fixed map (see train.py)."""
    from comfy.taesd.taesd import TAESD

    vae = TAESD()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        enc, dec = vae.taesd_encoder, vae.taesd_decoder
        _identity(enc[0], 3)
        for i in (2, 6, 10):  # stride-2 convs: the mean of each 2×2 block
            _identity(enc[i], 3, 0.25, taps=((1, 1), (1, 2), (2, 1), (2, 2)))
        _identity(enc[14], 3, LATENT_GAIN)
        enc[14].bias[:3] = -LATENT_GAIN / 2
        _identity(dec[1], 3, 1.0 / LATENT_GAIN)
        dec[1].bias[:3] = 0.5
        dec[1].weight[3:] = torch.randn(dec[1].weight[3:].shape, generator=gen) * 0.1
        dec[1].bias[3:] = 0.1
        for i in (7, 12, 17):
            _identity(dec[i], 64)
        _identity(dec[19], 3)
        for block in (m for m in dec if m.__class__.__name__ == "Block"):
            for j in (0, 2):
                w = block.conv[j].weight
                w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / w[0].numel()) ** 0.5 * 0.5)
        vae.vae_scale.fill_(SDXL_LATENT_SCALE)
    return vae


def encode_mean_colour(pixels01: torch.Tensor) -> torch.Tensor:
    """What the fixed encoder computes (B×3×H×W in 0..1 → B×4×H/8×W/8), without running its convolutions."""
    mean = torch.nn.functional.avg_pool2d(pixels01, 8)
    return torch.cat([LATENT_GAIN * (mean - 0.5), torch.zeros_like(mean[:, :1])], 1)


def unet_config(metadata: dict[str, str]) -> dict:
    """The ComfyUI unet_config a UNet file was written with (its metadata: what the loaders build)."""
    return json.loads(metadata["tiny_sdxl.unet_config"])


def read_models(folder) -> dict:
    """The three files' tensors and metadata."""
    from safetensors import safe_open

    out = {}
    for key, name in (("unet", UNET_FILE), ("clip", CLIP_FILE), ("vae", VAE_FILE)):
        if not (Path(folder) / name).exists():
            continue
        with safe_open(str(Path(folder) / name), framework="pt") as f:
            out[key] = ({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {})
    return out


def diffusers_vae(taesd: dict[str, torch.Tensor]):
    from diffusers import AutoencoderTiny

    vae = AutoencoderTiny(scaling_factor=1.0)
    vae.load_state_dict(
        {tiny_pipeline.taesd_key(k): v for k, v in taesd.items() if k.startswith("taesd_")}, strict=True
    )
    return vae.eval()


def pipeline(folder, comfy_dir, unet_ldm: dict[str, torch.Tensor] | None = None):
    """A diffusers StableDiffusionXLPipeline on the files in ``folder`` (``unet_ldm``: other UNet weights).
    Its UNet's parameters are the LDM tensors themselves (no copy), so training it trains ``unet_ldm``."""
    from diffusers import StableDiffusionXLPipeline

    (
        diffusers_unet_config,
        unet_from_ldm,
    ) = training_names("unet", "diffusers_unet_config", "unet_from_ldm")

    files = read_models(folder)
    config = UNET_CONFIG
    if unet_ldm is None:
        tensors, meta = files["unet"]
        unet_ldm = {k[len(UNET_PREFIX) :]: v for k, v in tensors.items()}
        config = unet_config(meta)
    unet = unet_from_ldm(unet_ldm, diffusers_unet_config(config))
    te1, te2 = tiny_pipeline.text_encoders(files["clip"][0], CLIP_L_CONFIG, CLIP_G_CONFIG)
    tok1, tok2 = tiny_pipeline.tokenizers(comfy_dir)
    vae = diffusers_vae(files["vae"][0])
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1.eval(),
        text_encoder_2=te2.eval(),
        tokenizer=tok1,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=tiny_pipeline.scheduler(),
        force_zeros_for_empty_prompt=False,
    )  # the UNet learnt "" as unconditioned
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_unet(path, unet_ldm: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    _save(
        path,
        half({UNET_PREFIX + k: v for k, v in unet_ldm.items()}),
        {"tiny_sdxl.unet_config": json.dumps(UNET_CONFIG), **metadata},
    )


def save_clip(path, seed: int, metadata: dict[str, str], tensors: dict[str, torch.Tensor] | None = None) -> None:
    _save(
        path,
        half(clip_state_dict(seed) if tensors is None else tensors),
        {
            "tiny_sdxl.clip_l_config": json.dumps(CLIP_L_CONFIG),
            "tiny_sdxl.clip_g_config": json.dumps(CLIP_G_CONFIG),
            **metadata,
        },
    )


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    _save(path, half(tensors), metadata)


def half(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 storage (half the size; the loaders compute in fp32); scalars such as TAESD's vae_scale stay fp32."""
    return {k: v.half() if v.dtype == torch.float32 and v.dim() > 0 else v for k, v in tensors.items()}


def _save(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomic, and byte-reproducible: tensors and metadata keys in sorted order (safetensors' own writer orders
    the metadata by a hash map, so the same tensors give different bytes from one process to the next)."""
    import os

    (write_tensors,) = training_names("weights", "write_tensors")
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    meta = {"format": "pt", **metadata}
    write_tensors(tmp, {k: v.detach().contiguous() for k, v in tensors.items()}, {k: meta[k] for k in sorted(meta)})
    os.replace(tmp, path)


def normalise(path, to_half: bool = False) -> None:
    """Rewrites a safetensors file written by another writer (the trainer's LoRA, transformers' folder) the
    byte-reproducible way: same tensors (``to_half``: stored as fp16), same metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    metadata.pop("format", None)
    _save(path, half(tensors) if to_half else tensors, metadata)
