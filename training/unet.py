"""The base UNet: diffusers config from ComfyUI's ``unet_config``, LDM state dict → ``UNet2DConditionModel``.

ComfyUI samples with the LDM-layout weights (``model.diffusion_model.*``); the trainer converts exactly those
weights with diffusers' own single-file converter, so it trains the model ComfyUI will sample with. The weights
reach the trainer as a safetensors file: the checkpoint ComfyUI loaded (when it is known and holds the same
weights) or an export. Files are read one tensor at a time into the UNet built on the ``meta`` device, so the
trainer holds the weights once (training/weights.py: file reading, fingerprint).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .weights import read_header, read_tensors, write_tensors

log = logging.getLogger(__name__)

LDM_PREFIX = "model.diffusion_model."
CONFIG_METADATA_KEY = "image_alchemy.diffusers_unet_config"
FAMILY_METADATA_KEY = "image_alchemy.model_family"


def _per_level(values, blocks_per_level: list[int], what: str) -> list[int]:
    """ComfyUI lists transformer depths per block; diffusers per level (uniform inside a level)."""
    if isinstance(values, int):
        return [values] * len(blocks_per_level)
    values, out = list(values), []
    for count in blocks_per_level:
        level, values = values[:count], values[count:]
        if len(set(level)) != 1:
            raise ValueError(f"{what} {level} differs inside one resolution level: not an SD1.5/SDXL-family UNet")
        out.append(level[0])
    return out


def diffusers_unet_config(unet_config: dict) -> dict:
    """Maps ComfyUI's SD1.5/SDXL ``unet_config`` to a ``UNet2DConditionModel`` config (real size and tiny)."""
    mult = list(unet_config["channel_mult"])
    channels = [unet_config["model_channels"] * m for m in mult]
    res_blocks = unet_config["num_res_blocks"]
    res_blocks = [res_blocks] * len(mult) if isinstance(res_blocks, int) else list(res_blocks)
    if len(set(res_blocks)) != 1:
        raise ValueError(f"num_res_blocks {res_blocks} must be the same on every level")
    down_depth = _per_level(unet_config["transformer_depth"], res_blocks, "transformer_depth")
    up_depth = _per_level(
        unet_config.get("transformer_depth_output", []) or [d for d in down_depth for _ in range(res_blocks[0] + 1)],
        [n + 1 for n in res_blocks],
        "transformer_depth_output",
    )[::-1]
    middle = unet_config.get("transformer_depth_middle", max(down_depth[-1], 1))
    if middle != max(down_depth[-1], 1):  # diffusers' mid block has the last level's depth, at least one
        raise ValueError(f"transformer_depth_middle {middle} must equal the last level's depth {down_depth[-1]}")
    head_channels = unet_config.get("num_head_channels", -1)
    heads = [c // head_channels if head_channels > 0 else unet_config["num_heads"] for c in channels]
    attn = [d > 0 for d in down_depth]
    config = {
        "sample_size": 128,
        "in_channels": unet_config.get("in_channels", 4),
        "out_channels": unet_config.get("out_channels", 4),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn[::-1]],
        "block_out_channels": channels,
        "layers_per_block": res_blocks[0],
        "transformer_layers_per_block": [max(d, 1) for d in down_depth],
        "attention_head_dim": heads,  # diffusers' name for the number of heads (kept for checkpoint compatibility)
        "cross_attention_dim": unet_config["context_dim"],
        "use_linear_projection": bool(unet_config.get("use_linear_in_transformer", False)),
    }
    if up_depth != down_depth[::-1]:
        config["reverse_transformer_layers_per_block"] = [max(d, 1) for d in up_depth]
    if unet_config.get("adm_in_channels"):
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=unet_config["adm_in_channels"],
        )
    return config


def unet_from_ldm(state_dict: dict[str, torch.Tensor], config: dict, dtype: torch.dtype = torch.float32):
    """Builds the diffusers UNet from LDM-layout weights (keys with or without ``model.diffusion_model.``).

    The model is built on the ``meta`` device and takes the given tensors as its parameters (``assign``): no
    randomly initialised fp32 UNet (10.3 GB for SDXL) is ever allocated, and no second copy of the weights."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    if not any(k.startswith(LDM_PREFIX) for k in state_dict):
        state_dict = {LDM_PREFIX + k: v for k, v in state_dict.items()}
    converted = convert_ldm_unet_checkpoint(state_dict, config)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    missing, unexpected = unet.load_state_dict(converted, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"UNet weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    left = [n for n, t in itertools.chain(unet.named_parameters(), unet.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"UNet tensors not in the weights: {left[:5]}")
    if any(p.dtype != dtype for p in unet.parameters()):  # read_tensors already cast; in-memory callers may not
        unet = unet.to(dtype)
    return unet


@dataclass(frozen=True)
class UnetSource:
    """Where the trainer reads the base UNet: a safetensors file, the key prefix of the UNet in it
    (``model.diffusion_model.`` in a checkpoint, "" in a UNet-only file), its diffusers config, the model's
    fingerprint (recorded in the LoRA) and its family."""

    path: str
    prefix: str
    config: dict
    model_hash: str
    family: str = "sdxl"  # training/families: whose denoiser the weights are (jobs written before families: SDXL)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict | str) -> UnetSource:
        if isinstance(value, dict):
            return cls(**value)
        return cls.from_export(value)

    @classmethod
    def from_export(cls, path: str | os.PathLike) -> UnetSource:
        """A file written by ``save_ldm_unet`` (its config and hash are in the metadata)."""
        metadata = read_header(path)[2]
        if CONFIG_METADATA_KEY not in metadata:
            raise ValueError(f"{path} has no {CONFIG_METADATA_KEY} metadata: it was not written by save_ldm_unet")
        return cls(
            str(path),
            LDM_PREFIX,
            json.loads(metadata[CONFIG_METADATA_KEY]),
            metadata.get("image_alchemy.model_hash", ""),
            metadata.get(FAMILY_METADATA_KEY, "sdxl"),
        )


def save_ldm_unet(
    path: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict, model_hash: str, family: str = "sdxl"
) -> Path:
    """Writes LDM-layout UNet weights with their diffusers config and family in the metadata (temp file +
    rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tensors = {
        (k if k.startswith(LDM_PREFIX) else LDM_PREFIX + k): v.detach().to("cpu").contiguous()
        for k, v in state_dict.items()
    }
    try:
        metadata = {CONFIG_METADATA_KEY: json.dumps(config), "image_alchemy.model_hash": model_hash}
        write_tensors(tmp, tensors, {**metadata, FAMILY_METADATA_KEY: family})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_unet(source: UnetSource, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """The family's diffusers denoiser from ``source``, its tensors read one at a time, cast to ``dtype`` on
    ``device``."""
    from .families import family_named

    log.info("reading the base UNet from %s", source.path)  # bench/train_startup.py takes the baseline here
    state_dict = read_tensors(source.path, source.prefix, dtype, torch.device(device))
    if not state_dict:
        raise ValueError(f"{source.path} holds no tensors under {source.prefix!r}: not the UNet file it should be")
    return family_named(source.family).denoiser_from_state_dict(state_dict, source.config, dtype)


def load_ldm_unet(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """Reads a file written by ``save_ldm_unet`` → (diffusers UNet, config, model hash)."""
    source = UnetSource.from_export(path)
    return load_unet(source, dtype, device), source.config, source.model_hash
