"""The LoRA file: kohya keys, ``ss_``-style metadata that other tools display, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .families import family_named
from .settings import TrainSettings
from .weights import write_tensors

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike) -> Path:
    """Where the LoRA is written before the rename; the node removes it if the child is killed mid-write."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def written_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields the '.partial' path to write; renamed onto ``path`` when the block succeeds, removed either way,
    so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def lora_metadata(
    settings: TrainSettings,
    *,
    base_model_hash: str,
    num_images: int,
    resolution: tuple[int, int],
    losses: list[float],
    output_name: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Kohya ``ss_`` keys (shown by A1111/Forge/ComfyUI-Manager), the family's base-model keys plus ours; no
    timestamps, so the same training gives the same file bytes."""
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(settings.rank),
        "ss_network_alpha": repr(settings.lora_alpha),
        "ss_output_name": output_name,
        "ss_max_train_steps": str(settings.steps),
        "ss_learning_rate": repr(settings.learning_rate),
        "ss_lr_scheduler": settings.lr_scheduler,
        "ss_optimizer": settings.optimizer,
        "ss_seed": str(settings.seed),
        "ss_gradient_accumulation_steps": str(settings.gradient_accumulation),
        "ss_zero_terminal_snr": str(settings.zero_terminal_snr),
        "ss_mixed_precision": settings.mixed_precision,
        "ss_noise_offset": repr(settings.noise_offset),
        "ss_num_train_images": str(num_images),
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_training_comment": f"Image Alchemy subject LoRA: '{settings.prompt}'",
        "ss_tag_frequency": json.dumps({"subject": {settings.prompt: num_images}}),
        "image_alchemy.token": settings.token,
        "image_alchemy.class_word": settings.class_word,
        "image_alchemy.prompt": settings.prompt,
        "image_alchemy.steps": str(settings.steps),
        "image_alchemy.rank": str(settings.rank),
        "image_alchemy.alpha": repr(settings.lora_alpha),
        "image_alchemy.base_model_hash": base_model_hash,
        "image_alchemy.regularizer": settings.regularizer(),
        "image_alchemy.settings": settings.to_json(),
        "image_alchemy.losses": json.dumps([round(v, 6) for v in losses]),
    }
    meta.update(family_named(settings.model_family).lora_metadata())  # base model, target modules
    meta.update(extra or {})
    return meta


def save_lora(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Writes ``path`` + '.partial' then renames it: readers never see a half-written LoRA. Tensors and metadata
    are written in sorted order, so the same training gives the same bytes (safetensors' ``save_file`` writes the
    metadata in hash-map order, which differs from one call to the next)."""
    try:
        with written_atomically(path) as tmp:
            write_tensors(tmp, state_dict, dict(sorted(metadata.items())))
    except (OSError, SafetensorError) as e:  # disk full, quota, permissions: say so instead of a traceback
        raise RuntimeError(
            f"could not write the LoRA to {path} ({e}): free disk space or check that the folder "
            "is writable, then train again"
        ) from e
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def kohya_state_dict(unet) -> dict[str, torch.Tensor]:
    """The UNet's peft LoRA under kohya names: peft state dict → ``unet.``-prefixed → diffusers' conversion."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_kohya({f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()})


def export_kohya(unet, settings: TrainSettings) -> dict[str, torch.Tensor]:
    """The kohya state dict as saved: weights on the CPU in the save precision, alpha from the settings."""
    kohya = kohya_state_dict(unet)
    save_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[settings.save_precision]
    out = {}
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            out[key] = torch.tensor(settings.lora_alpha, dtype=torch.float32)
        else:
            out[key] = value.detach().to("cpu", save_dtype).contiguous()
    return out
