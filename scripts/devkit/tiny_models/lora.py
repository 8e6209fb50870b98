"""Writes a small kohya-format LoRA for the tiny SDXL UNet (test helper).

Keys are the ones our trainer writes (diffusers' ``convert_state_dict_to_kohya`` of a peft LoRA on
to_q/to_k/to_v/to_out.0): ``lora_unet_<diffusers module path with _>.lora_down.weight / .lora_up.weight / .alpha``.
The diffusers module paths come from ComfyUI's own SDXL map (``comfy.utils.unet_to_diffusers``), so the file is
what ``comfy.lora.load_lora`` reads for a real SDXL LoRA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ATTENTION_PROJECTIONS = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight")


def kohya_lora_for_unet(unet_file: Path, rank: int = 4, scale: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random LoRA factors (std ``scale``) on every attention projection of the LDM-layout UNet in ``unet_file``."""
    import comfy.utils

    with safe_open(str(unet_file), "pt") as f:
        config = json.loads(f.metadata()["tiny_sdxl.unet_config"])
        shapes = {k[len("model.diffusion_model.") :]: f.get_slice(k).get_shape() for k in f.keys()}
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for diffusers_key, ldm_key in sorted(comfy.utils.unet_to_diffusers(config).items()):
        if not diffusers_key.endswith(ATTENTION_PROJECTIONS) or ldm_key not in shapes:
            continue
        rows, cols = shapes[ldm_key]
        name = "lora_unet_" + diffusers_key[: -len(".weight")].replace(".", "_")
        out[name + ".lora_down.weight"] = torch.randn(rank, cols, generator=generator) * scale
        out[name + ".lora_up.weight"] = torch.randn(rows, rank, generator=generator) * scale
        out[name + ".alpha"] = torch.tensor(float(rank))  # kohya: ΔW = up·down·alpha/rank, so overall scale 1
    if not out:
        raise RuntimeError(f"no attention projections found in {unet_file}")
    return out


def write_kohya_lora(path: Path, unet_file: Path, **kwargs) -> Path:
    tensors = kohya_lora_for_unet(unet_file, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(
        tensors,
        str(tmp),
        metadata={
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(kwargs.get("rank", 4)),
            "ss_network_alpha": str(kwargs.get("rank", 4)),
        },
    )
    os.replace(tmp, path)
    return path
