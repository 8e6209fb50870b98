"""How TrainSubjectLoRA hands the base UNet (of any family: training/families) to the trainer without a 5 GB copy
when it can (docs/DESIGN.md §5.3).

1. The MODEL came straight from a safetensors file: newer ComfyUI (0.33 does, 0.3.75 does not) records on
   the ModelPatcher how its loader made it (``cached_patcher_init``: ``load_checkpoint_guess_config(path, …)``
   for checkpoints, ``load_diffusion_model(path, …)`` for UNet files; clones keep it). Without that record, the
   safetensors files in ComfyUI's ``checkpoints`` and ``diffusion_models`` folders are searched: a header read
   each, and the values are only compared in files whose UNet tensor names and shapes match. The trainer reads
   the file found, after it was checked against the weights in memory (training/weights.py ``file_matches``), so
   a file that changed on disk since it was loaded is never trained on.
2. Otherwise (older ComfyUI, a MODEL built in memory): the weights are exported once to the pack's cache folder
   ``models/image_alchemy/unet_cache`` (ComfyUI's temp folder is emptied at every start and exit), named by the
   model's fingerprint and reused across restarts; only the newest export is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths

from ..training.unet import LDM_PREFIX, UnetSource, save_ldm_unet
from ..training.weights import file_matches

log = logging.getLogger(__name__)

FILE_LOADERS = ("load_checkpoint_guess_config", "load_diffusion_model")
MODEL_FOLDERS = ("checkpoints", "diffusion_models")
SAFETENSORS = (".safetensors", ".sft")


def cache_dir() -> Path:
    path = Path(folder_paths.models_dir) / "image_alchemy" / "unet_cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def loaded_from(model) -> str | None:
    """The safetensors file ComfyUI's loader built this MODEL from, when ComfyUI records it."""
    init = getattr(model, "cached_patcher_init", None)
    if not init or len(init) < 2 or getattr(init[0], "__name__", "") not in FILE_LOADERS or not init[1]:
        return None
    path = init[1][0]
    if not isinstance(path, str) or not path.lower().endswith(SAFETENSORS) or not Path(path).is_file():
        return None
    return path


def model_files() -> list[str]:
    """Safetensors files in ComfyUI's checkpoint and diffusion-model folders."""
    found = []
    for folder in MODEL_FOLDERS:
        if folder not in folder_paths.folder_names_and_paths:
            continue
        for name in folder_paths.get_filename_list(folder):
            path = folder_paths.get_full_path(folder, name)
            if path and path.lower().endswith(SAFETENSORS) and path not in found:
                found.append(path)
    return found


def unet_source(model, state_dict: dict, config: dict, model_hash: str, family: str = "sdxl") -> UnetSource:
    """Where the trainer reads the base UNet ``state_dict`` (ComfyUI's, base weights) of the ``family``
    (training/families): see the module docstring."""
    recorded = loaded_from(model)
    for path in ([recorded] if recorded else []) + [p for p in model_files() if p != recorded]:
        prefix = file_matches(path, state_dict)
        if prefix is not None:
            log.info("TrainSubjectLoRA: the trainer reads the UNet from %s (no export)", path)
            return UnetSource(path, prefix, config, model_hash, family)
        if path == recorded:
            log.warning("TrainSubjectLoRA: %s no longer holds the loaded UNet weights (changed on disk?)", path)
    export = cache_dir() / f"unet-{model_hash[:20]}.safetensors"
    if not (export.exists() and file_matches(export, state_dict, (LDM_PREFIX,)) == LDM_PREFIX):
        for old in cache_dir().glob("unet-*.safetensors"):
            old.unlink(missing_ok=True)
        log.info("TrainSubjectLoRA: exporting the UNet once to %s", export)
        save_ldm_unet(export, state_dict, config, model_hash, family)
    return UnetSource(str(export), LDM_PREFIX, config, model_hash, family)
