"""Writes tiny SDXL- and SD1.5-architecture weights, seeded, in the file formats real checkpoints use.

ComfyUI's checkpoint detection accepts only exact SDXL sizes, so the tiny model is split into the three
files ComfyUI's own classes (and our trainer) read directly:

- ``unet.safetensors``: the LDM layout of an SDXL checkpoint (``model.diffusion_model.*``); its metadata
  carries the UNet config (``tiny_sdxl.unet_config``) that ``comfy.supported_models.SDXL`` needs.
- ``clip.safetensors``: ComfyUI's SDXL text encoder layout (``clip_l.transformer.*``, ``clip_g.transformer.*``),
  with the two text-model configs in the metadata. The tokenizers are the real CLIP BPE files.
- ``taesd.safetensors``: a TAESD VAE (``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``, ``vae_shift``),
  which ComfyUI detects natively and diffusers reads as ``AutoencoderTiny``.

Building the tensors needs ComfyUI importable (the UNet module defines the key layout); call
``use_comfyui(path)`` first.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."

TINY_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": [1, 1],
    "transformer_depth": [0, 1],
    "transformer_depth_output": [0, 0, 1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 32 + 6 * 256,
    "context_dim": 64,
    "num_head_channels": 8,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

# Text encoders: clip_l (hidden 32) + clip_g (hidden 32) → cond 77×64, pooled 32, matching the UNet above.
# Three layers at least: SDXL reads the penultimate hidden state.
_TEXT_BASE = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "pad_token_id": 1,
    "vocab_size": 49408,
    "torch_dtype": "float32",
}
TINY_CLIP_L_CONFIG = {
    **_TEXT_BASE,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 32,
}
TINY_CLIP_G_CONFIG = {
    **_TEXT_BASE,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 32,
}

UNET_FILE, CLIP_FILE, VAE_FILE = "unet.safetensors", "clip.safetensors", "taesd.safetensors"

# The tiny SD1.5: SD1.5's layout (attention on every level but the last, no added conditioning, heads by count,
# conv in/out projections of the transformers) at SD-tiny widths; CLIP-L hidden 32 → cond 77×32.
TINY_SD15_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 0],
    "transformer_depth_output": [1, 1, 0, 0],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "legacy": False,
    "adm_in_channels": None,
    "context_dim": 32,
    "num_heads": 2,
    "num_head_channels": -1,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
TINY_SD15_CLIP_L_CONFIG = dict(TINY_CLIP_L_CONFIG)
SD15_UNET_FILE, SD15_CLIP_FILE = "sd15_unet.safetensors", "sd15_clip.safetensors"


def use_comfyui(comfy_dir: str | os.PathLike) -> None:
    """Makes a ComfyUI checkout importable in this process, on the CPU when there is no GPU."""
    comfy_dir = str(Path(comfy_dir).resolve())
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True


def seeded_fill(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI's ops skip weight init (empty tensors): fill every parameter from one seeded generator.

    Norm layers get weight 1 / bias 0; other weights a fan-in scaled normal, biases small noise, so the
    model's output is finite and non-trivial (real checkpoints zero their output convs; we do not).
    """
    gen = torch.Generator().manual_seed(seed)
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for _name, sub in sorted(module.named_modules()):
        for pname, param in sorted(sub.named_parameters(recurse=False)):
            with torch.no_grad():
                if isinstance(sub, norm_types):
                    param.fill_(1.0 if pname == "weight" else 0.0)
                elif param.dim() == 0:
                    continue  # scalars keep their constructor value (TAESD's vae_scale / vae_shift)
                elif param.dim() > 1:
                    fan_in = param[0].numel()
                    param.copy_(torch.randn(param.shape, generator=gen) / fan_in**0.5)
                else:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def tiny_unet_state_dict(seed: int = 0, config: dict | None = None) -> dict[str, torch.Tensor]:
    """The tiny SDXL UNet (``config``: another ComfyUI unet_config of the same family), seeded."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = TINY_UNET_CONFIG if config is None else config
    unet = UNetModel(**config, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    seeded_fill(unet, seed)
    return {UNET_PREFIX + k: v.contiguous() for k, v in unet.state_dict().items()}


def tiny_clip_state_dict(seed: int = 1, encoders=None) -> dict[str, torch.Tensor]:
    """ComfyUI's text-encoder layout of ``encoders`` ((name, config) pairs; default SDXL's clip_l + clip_g)."""
    import comfy.ops
    from comfy.clip_model import CLIPTextModel

    out = {}
    encoders = encoders or (("clip_l", TINY_CLIP_L_CONFIG), ("clip_g", TINY_CLIP_G_CONFIG))
    for offset, (name, config) in enumerate(encoders):
        model = CLIPTextModel(config, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
        seeded_fill(model, seed + offset)
        for k, v in model.state_dict().items():
            out[f"{name}.transformer.{k}"] = v.contiguous()
    return out


def tiny_taesd_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    from comfy.taesd.taesd import TAESD

    vae = TAESD()
    seeded_fill(vae, seed)
    return {k: v.contiguous() for k, v in vae.state_dict().items()}


def write_tiny_sdxl(folder: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Writes the three tiny model files into ``folder`` (skipped when present) and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"unet": folder / UNET_FILE, "clip": folder / CLIP_FILE, "vae": folder / VAE_FILE}
    writers = {
        "unet": (lambda: tiny_unet_state_dict(seed), {"tiny_sdxl.unet_config": json.dumps(TINY_UNET_CONFIG)}),
        "clip": (
            lambda: tiny_clip_state_dict(seed + 1),
            {
                "tiny_sdxl.clip_l_config": json.dumps(TINY_CLIP_L_CONFIG),
                "tiny_sdxl.clip_g_config": json.dumps(TINY_CLIP_G_CONFIG),
            },
        ),
        "vae": (lambda: tiny_taesd_state_dict(seed + 2), {}),
    }
    for key, (build, metadata) in writers.items():
        if paths[key].exists():
            continue
        tmp = paths[key].with_suffix(".tmp")
        save_file(build(), str(tmp), metadata={"format": "pt", "tiny_sdxl.seed": str(seed), **metadata})
        os.replace(tmp, paths[key])
    return paths


def write_tiny_sd15(folder: str | os.PathLike, seed: int = 10) -> dict[str, Path]:
    """Writes the tiny SD1.5's UNet and CLIP-L beside the tiny SDXL's files (the TAESD VAE is shared: SD1.5 and
    SDXL use the same TAESD architecture) and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"sd15_unet": folder / SD15_UNET_FILE, "sd15_clip": folder / SD15_CLIP_FILE}
    writers = {
        "sd15_unet": (
            lambda: tiny_unet_state_dict(seed, TINY_SD15_UNET_CONFIG),
            {"tiny_sd15.unet_config": json.dumps(TINY_SD15_UNET_CONFIG)},
        ),
        "sd15_clip": (
            lambda: tiny_clip_state_dict(seed + 1, (("clip_l", TINY_SD15_CLIP_L_CONFIG),)),
            {"tiny_sd15.clip_l_config": json.dumps(TINY_SD15_CLIP_L_CONFIG)},
        ),
    }
    for key, (build, metadata) in writers.items():
        if paths[key].exists():
            continue
        tmp = paths[key].with_suffix(".tmp")
        save_file(build(), str(tmp), metadata={"format": "pt", "tiny_sd15.seed": str(seed), **metadata})
        os.replace(tmp, paths[key])
    return paths
