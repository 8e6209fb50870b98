"""The torch device plumbing in one place, for every device the trainer runs on (cuda — NVIDIA and ROCm —, xpu,
mps, cpu): which device ``auto`` means, what torch answers about it (the capability answers of
training/hardware.py, for `python -m training fit`), and the few calls that differ per device (synchronize, free
the cache, memory figures) so no ``torch.cuda`` call sits on a path that runs elsewhere.
"""

from __future__ import annotations

import torch

from .hardware import ACCELERATORS, Machine, unified_memory_available

# Where ``auto`` looks, in this order (a machine rarely has two kinds; CUDA first as the common case).
AUTO_ORDER = ("cuda", "xpu", "mps")
# AMD architectures without native bf16 (RDNA2 and older; ComfyUI's list, comfy/model_management.py).
AMD_WITHOUT_BF16 = ("gfx1030", "gfx1031", "gfx1035", "gfx1010", "gfx1011", "gfx1012", "gfx906", "gfx900", "gfx803")


def _module(device_type: str):
    """torch.cuda, torch.xpu or torch.mps: the per-device module (same names for the calls used here)."""
    return getattr(torch, device_type, None) if device_type in ACCELERATORS else None


def is_available(device_type: str) -> bool:
    if device_type == "mps":
        return torch.backends.mps.is_available()
    module = _module(device_type)
    return bool(module is not None and module.is_available())


def pick(name: str = "auto") -> torch.device:
    """``auto`` → the first of cuda, xpu, mps that torch finds, else the CPU; a named device is checked to exist.
    Raises ValueError naming the devices to choose from."""
    if name == "auto":
        return torch.device(next((t for t in AUTO_ORDER if is_available(t)), "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r} is not a torch device: use auto, cpu, cuda[:N], xpu[:N] or mps") from e
    if device.type != "cpu" and not is_available(device.type):
        found = [t for t in AUTO_ORDER if is_available(t)] + ["cpu"]
        raise ValueError(f"device {name!r}: this torch finds no {device.type} device; available: {', '.join(found)}")
    return device


def autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)  # torch ≥ 2.4
    return bool(check(device_type)) if check is not None else device_type == "cuda"


def memory_for_training(device: torch.device) -> int | None:
    """Bytes a training process may use on ``device``: on cuda/xpu free memory plus what this process's cache
    holds (ComfyUI's models are unloaded before training); on a Mac the RAM free now, up to Metal's working-set
    limit; None on the CPU."""
    if device.type in ("cuda", "xpu"):
        module = _module(device.type)
        if not hasattr(module, "mem_get_info"):  # xpu before torch 2.6
            return module.get_device_properties(device).total_memory
        free, _total = module.mem_get_info(device)
        return free + module.memory_reserved(device)
    if device.type == "mps":
        limit = getattr(torch.mps, "recommended_max_memory", None)  # torch ≥ 2.5
        return unified_memory_available(_system_available(), limit() if limit is not None else None)
    return None


def _system_available() -> int | None:
    try:
        import psutil  # ComfyUI's dependency; `fit` may run without it
    except ImportError:
        return None
    return psutil.virtual_memory().available


def torch_machine(device: torch.device) -> Machine:
    """What torch itself answers about ``device`` (the node asks ComfyUI instead: nodes/train_device.py)."""
    kind = device.type
    if kind == "cuda" and torch.version.hip:  # torch says bf16 for every AMD GPU; RDNA2 and older emulate it
        arch = torch.cuda.get_device_properties(device).gcnArchName
        bf16, fp16 = not any(a in arch for a in AMD_WITHOUT_BF16), True
    elif kind == "cuda":
        # Without including_emulation=False, torch counts GPUs that emulate bf16 (T4, V100, RTX 20xx) as native.
        bf16, fp16 = torch.cuda.is_bf16_supported(including_emulation=False), True
    elif kind == "xpu":
        bf16 = torch.xpu.is_bf16_supported(including_emulation=False)
        fp16 = getattr(torch.xpu.get_device_properties(device), "has_fp16", True)
    elif kind == "mps":
        bf16, fp16 = _macos_14_or_newer(), True  # Metal computes bf16 from macOS 14 (ComfyUI's rule too)
    else:
        return Machine(kind)
    return Machine(kind, bf16, fp16, autocast_available(kind), memory_for_training(device))


def _macos_14_or_newer() -> bool:
    import platform

    version = platform.mac_ver()[0]
    return bool(version) and int(version.split(".")[0]) >= 14


def synchronize(device: torch.device) -> None:
    module = _module(device.type)
    if module is not None:
        module.synchronize()


def empty_cache(device: torch.device) -> None:
    module = _module(device.type)
    if module is not None:
        module.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    if device.type in ("cuda", "xpu"):
        _module(device.type).reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """The most memory torch allocated on the device since ``reset_peak_memory``; on a Mac (no peak counter) what
    the Metal driver holds now; None on the CPU."""
    if device.type in ("cuda", "xpu"):
        return _module(device.type).max_memory_allocated(device)
    if device.type == "mps":
        return torch.mps.driver_allocated_memory()
    return None


def device_name(device: torch.device) -> str:
    if device.type in ("cuda", "xpu"):
        return _module(device.type).get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (mps)"
    return "CPU"
