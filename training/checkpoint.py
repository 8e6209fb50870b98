"""Checkpoints and resume: ``<name>-step<N>.safetensors`` (a LoRA like the final one, plus its step) with
``<name>-step<N>.trainstate`` beside it (safetensors too: the fp32 LoRA weights, the optimizer's own ``state_dict``,
the seeded generator's state, the batch order and APT's indicator), from which training continues bit for bit on
the CPU, whichever optimizer trains (training/optimizers.py).

The optimizer's ``state_dict`` is flattened with no pickle: its tensors become ``optimizer.<path>`` tensors of the
file, the rest (indices, hyperparameters, tuples, numbers) JSON in its metadata with a ``{"<tensor>": name}`` where
each tensor was.

The state's extension is not a model extension, so ComfyUI's LoRA list does not show it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .lora_file import read_metadata, written_atomically

STATE_SUFFIX = ".trainstate"
STATE_FORMAT = "image_alchemy.train_state/2"
ADAMW_FORMAT = "image_alchemy.train_state/1"  # before the choice of optimizer: AdamW's moments as adam.* keys
STEP_KEY = "image_alchemy.step"
# Settings a resumed run may change: they do not change what the steps compute.
MAY_DIFFER = {
    "steps",
    "save_every",
    "resume_from",
    "gradient_checkpointing",
    "device",
    "preview_every",
    "preview_prompt",
    "preview_steps",
}


def checkpoint_path(output: str | os.PathLike, step: int) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}-step{step}{output.suffix}")


def state_path(lora_path: str | os.PathLike) -> Path:
    return Path(lora_path).with_suffix(STATE_SUFFIX)


def data_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Loop:
    """What a step changes besides the step count."""

    unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    sampler: object  # trainer._BatchSampler
    objective: object  # objective.Objective
    scaler: object | None = None


def _lora_params(unet) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def _compared(settings) -> dict:
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in MAY_DIFFER}


def save_state(path: str | os.PathLike, loop: Loop, *, step: int, losses: list[float], settings, digest: str) -> Path:
    """Writes the resume state (atomic: a '.partial' renamed)."""
    tensors = {
        "generator": loop.generator.get_state(),
        "sampler.order": torch.tensor(loop.sampler.order, dtype=torch.int64),
    }
    class_sampler = getattr(loop.objective, "class_sampler", None)
    if class_sampler is not None:
        tensors["class_sampler.order"] = torch.tensor(class_sampler.order, dtype=torch.int64)
    indicator = getattr(loop.objective, "indicator", None)
    if indicator is not None:
        tensors.update(
            {
                "indicator.ema_pre": indicator.ema_pre,
                "indicator.ema_ft": indicator.ema_ft,
                "indicator.seen": indicator.seen,
            }
        )
    for name, p in _lora_params(loop.unet).items():
        tensors[f"lora.{name}"] = p.detach()
    meta = {
        "format": STATE_FORMAT,
        STEP_KEY: str(step),
        "losses": json.dumps(losses),
        "settings": json.dumps(_compared(settings), sort_keys=True),
        "data": digest,
        "optimizer": json.dumps(_flatten(loop.optimizer.state_dict(), "optimizer", tensors)),
    }
    if loop.scaler is not None:
        meta["scaler"] = json.dumps({"scale": loop.scaler.get_scale()})  # fp16: its growth counter restarts
    with written_atomically(path) as tmp:
        save_file(_unshared(tensors), str(tmp), metadata=meta)
    return Path(path)


def restore(path: str | os.PathLike, loop: Loop, lr_schedule, *, settings, digest: str) -> tuple[int, list[float]]:
    """Loads a resume state into a freshly built loop; returns (step, losses so far). Refuses a state from other
    photos or settings (its steps would not be the ones this run computes)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"resume_from: no resume state {path.name} beside the checkpoint: resume from a "
            f"<name>-step<N>.safetensors written with save_every (its {STATE_SUFFIX} holds the "
            "optimizer state)"
        )
    meta = read_metadata(path)
    if meta.get("format") not in (STATE_FORMAT, ADAMW_FORMAT):
        raise ValueError(f"resume_from: {path.name} is not a training state of this trainer")
    theirs, ours = json.loads(meta["settings"]), _compared(settings)
    if meta["format"] == ADAMW_FORMAT:
        theirs.setdefault("optimizer", "adamw")
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        raise ValueError(
            f"resume_from: the checkpoint was trained with other settings ({', '.join(differ)}): "
            "resume with the same settings (only steps, save_every and the previews may change)"
        )
    if meta["data"] != digest:
        raise ValueError(
            "resume_from: the checkpoint was trained on other photos (or masks): resume with the same images"
        )
    step = int(meta[STEP_KEY])
    if step >= settings.steps:
        raise ValueError(
            f"resume_from: the checkpoint is at step {step}, not before steps ({settings.steps}): "
            "raise steps to train further"
        )
    tensors = load_file(str(path))
    loop.generator.set_state(tensors["generator"])
    loop.sampler.order = tensors["sampler.order"].tolist()
    if "class_sampler.order" in tensors:
        loop.objective.class_sampler.order = tensors["class_sampler.order"].tolist()
    if "indicator.seen" in tensors:
        ind = loop.objective.indicator
        ind.ema_pre, ind.ema_ft, ind.seen = (tensors[f"indicator.{k}"] for k in ("ema_pre", "ema_ft", "seen"))
    params = _lora_params(loop.unet)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"lora.{name}"])
    if meta["format"] == ADAMW_FORMAT:
        _restore_adamw_moments(loop.optimizer, params, tensors)
    else:
        # load_state_dict moves the per-parameter state to each parameter's device (steps stay where the
        # optimizer keeps them); tensors in the groups (Prodigy's running sums) follow the parameters here.
        loop.optimizer.load_state_dict(_unflatten(json.loads(meta["optimizer"]), tensors))
        for group in loop.optimizer.param_groups:
            device = group["params"][0].device
            for key, value in group.items():
                if torch.is_tensor(value):
                    group[key] = value.to(device)
    if loop.scaler is not None and "scaler" in meta:
        saved = json.loads(meta["scaler"])
        loop.scaler.update(saved["scale"])
    with warnings.catch_warnings():  # the schedule follows the step count; no optimizer step is due here
        warnings.simplefilter("ignore")
        for _ in range(step):
            lr_schedule.step()
    return step, json.loads(meta["losses"])


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """On the CPU, each tensor with storage of its own: safetensors refuses shared memory, and an optimizer may
    keep one tensor in several places (bitsandbytes' quantization maps)."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if storage in seen else tensor
        seen.add(storage)
    return out


def _flatten(value, path: str, tensors: dict[str, torch.Tensor]):
    """``value`` as JSON, its tensors moved into ``tensors`` under their path (``optimizer.state.0.exp_avg``)."""
    if torch.is_tensor(value):
        tensors[path] = value.detach()
        return {"<tensor>": path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _flatten(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {"<items>": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
        return {"<tuple>": items} if isinstance(value, tuple) else items
    if isinstance(value, torch.dtype):
        return {"<dtype>": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value  # floats round-trip exactly through JSON (inf as Infinity)
    raise TypeError(f"cannot store {type(value).__name__} at {path} of the optimizer state")


def _unflatten(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "<tensor>" in value:
        return tensors[value["<tensor>"]]
    if "<items>" in value:
        return {k: _unflatten(v, tensors) for k, v in value["<items>"]}
    if "<tuple>" in value:
        return tuple(_unflatten(v, tensors) for v in value["<tuple>"])
    if "<dtype>" in value:
        return getattr(torch, value["<dtype>"])
    return {k: _unflatten(v, tensors) for k, v in value.items()}


def _restore_adamw_moments(optimizer, params: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor]):
    """A state of format /1 (AdamW's moments as ``adam.<key>.<parameter name>``)."""
    for name, p in params.items():
        state = {
            key.split(".", 2)[1]: value.to(p.device)
            for key, value in tensors.items()
            if key.startswith("adam.") and key.split(".", 2)[2] == name
        }
        if state:
            state["step"] = state["step"].cpu()  # AdamW keeps its step count on the CPU
            optimizer.state[p] = state
