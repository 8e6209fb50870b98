"""Settings that depend on the machine: the mixed-precision dtype and whether to checkpoint gradients.

Plain functions of the capability answers (the node asks torch and ComfyUI and passes the answers in), so each
decision is testable without the hardware.
"""

from __future__ import annotations

GIB = 1024**3
# SDXL UNet activations kept for the backward pass at 1024², batch 1, mixed precision (estimated on the
# full-size architecture); they grow with batch × pixels.
ACTIVATIONS_1024_GIB = {False: 7.3, True: 0.5}  # gradient checkpointing off / on
SDXL_UNET_PARAMS = 2.567e9
WORKSPACE_GIB = 1.5  # LoRA + optimizer state, CUDA context, allocator slack


def auto_mixed_precision(choice: str, device_type: str, bf16_native: bool) -> str:
    """auto → bf16 where the GPU computes bf16 natively, fp16 on GPUs that only emulate it (T4, V100, RTX 20xx:
    emulated bf16 is several times slower), full precision on the CPU. Other choices are kept."""
    if choice != "auto":
        return choice
    if device_type != "cuda":
        return "no"
    return "bf16" if bf16_native else "fp16"


def activations_gib(batch_size: int, resolution: int, checkpointing: bool, family=None) -> float:
    """``family`` (training/families): its full-size figures at its native size; SDXL's when None."""
    if family is None:
        return ACTIVATIONS_1024_GIB[checkpointing] * batch_size * (resolution / 1024) ** 2
    native = family.native_resolution
    return family.memory.activations_gib[int(checkpointing)] * batch_size * (resolution / native) ** 2


def training_memory_gib(
    batch_size: int, resolution: int, checkpointing: bool, mixed_precision: str, family=None
) -> float:
    """Estimated peak GPU memory of a full-size LoRA step (SDXL's, or ``family``'s): base weights + activations +
    workspace."""
    weight_bytes = 4 if mixed_precision == "no" else 2
    params = SDXL_UNET_PARAMS if family is None else family.memory.params
    return params * weight_bytes / GIB + activations_gib(batch_size, resolution, checkpointing, family) + WORKSPACE_GIB


def auto_gradient_checkpointing(
    choice: str,
    device_type: str,
    *,
    batch_size: int,
    resolution: int,
    mixed_precision: str,
    available_bytes: int | None,
    family=None,
) -> bool:
    """auto → on when a step without checkpointing would not fit in the memory available for training (so a
    12–16 GB card trains at 1024², while a 24 GB+ card keeps the ~30% faster steps); off on the CPU, where
    recomputing costs time and memory is not the limit. on / off are kept."""
    if choice in ("on", "off"):
        return choice == "on"
    if choice != "auto":
        raise ValueError(f"gradient_checkpointing must be auto, on or off, got {choice!r}")
    if device_type != "cuda" or available_bytes is None:
        return False
    needed = training_memory_gib(batch_size, resolution, False, mixed_precision, family)
    return needed > available_bytes / GIB
