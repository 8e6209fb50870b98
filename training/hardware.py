"""Settings that depend on the machine: whether its device can train, the mixed-precision dtype and whether to
checkpoint gradients (docs/DESIGN.md §4.2.2).

Plain functions of the capability answers (``Machine``): the node asks the ComfyUI it runs in
(nodes/train_device.py), `python -m training fit` asks torch (training/devices.py), so each decision is testable
for every device without the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
# SDXL UNet activations kept for the backward pass at 1024², batch 1, mixed precision (estimated on the
# full-size architecture); they grow with batch × pixels.
ACTIVATIONS_1024_GIB = {False: 7.3, True: 0.5}  # gradient checkpointing off / on
SDXL_UNET_PARAMS = 2.567e9
WORKSPACE_GIB = 1.5  # LoRA + optimizer state, CUDA context, allocator slack
# The GPUs the trainer trains on, as torch names them: cuda is NVIDIA's and, under ROCm, AMD's; xpu Intel's; mps
# Apple's. The CPU trains too.
ACCELERATORS = ("cuda", "xpu", "mps")
TRAINS_ON = (*ACCELERATORS, "cpu")


@dataclass(frozen=True)
class Machine:
    """The answers about the device training runs on."""

    device_type: str  # torch.device.type; DirectML's is privateuseone
    bf16: bool = False  # computes bf16 natively (GPUs that only emulate it answer False)
    fp16: bool = False  # computes fp16 (ComfyUI's answer: False on GTX 16xx, whose fp16 is broken)
    autocast: bool = False  # this torch build autocasts on the device
    available_bytes: int | None = None  # memory a training step may use; on a Mac, RAM the GPU may take
    directml: bool = False


def trainable_problem(machine: Machine) -> str | None:
    """Why the machine's device cannot train, with the alternative, or None."""
    if machine.directml:
        return (
            "ComfyUI runs on DirectML (--directml), on which torch cannot train a LoRA (torch-directml has no "
            "reliable backward pass, and the trainer's own process cannot reach that device): on an AMD GPU use "
            "a ROCm build of PyTorch (Linux, WSL2, or AMD's PyTorch for Windows), on an NVIDIA GPU a CUDA build; or "
            "start ComfyUI with --cpu to train on the CPU (slow)"
        )
    if machine.device_type not in TRAINS_ON:
        return (
            f"ComfyUI runs on a '{machine.device_type}' device, which the trainer does not support: it trains on "
            "NVIDIA (cuda), AMD under ROCm (cuda), Intel (xpu) and Apple (mps) GPUs and on the CPU; start ComfyUI "
            "with --cpu to train on the CPU (slow)"
        )
    return None


def auto_mixed_precision(choice: str, machine: Machine) -> str:
    """auto → bf16 where the GPU computes bf16 natively; fp16 on GPUs that only emulate bf16 (T4, V100, RTX 20xx:
    emulated bf16 is several times slower), but not on Apple's, whose fp16 training needs a GradScaler that torch's
    MPS builds long lacked and until mid-2026 got wrong (fp16 gradients zeroed, pytorch#184286); full precision on
    the CPU, where ComfyUI itself runs fp32, or where this torch cannot autocast on the device. Other choices are
    kept."""
    if choice != "auto":
        return choice
    if machine.device_type not in ACCELERATORS or not machine.autocast:
        return "no"
    if machine.bf16:
        return "bf16"
    if machine.fp16 and machine.device_type != "mps":
        return "fp16"
    return "no"


def precision_problem(precision: str, machine: Machine) -> str | None:
    """Why an explicitly chosen precision cannot train on the machine's GPU, with what to use instead, or None
    (the CPU's rule is the settings' own: mixed precision needs a GPU)."""
    if precision == "no" or machine.device_type not in ACCELERATORS:
        return None
    if not machine.autocast:
        return (
            f"mixed_precision {precision} needs autocast on {machine.device_type}, which this torch build "
            "lacks: use 'no', or a newer torch"
        )
    if machine.device_type == "mps" and precision == "fp16":
        return "mixed_precision fp16 does not train reliably on Apple GPUs (torch's MPS GradScaler): use bf16 or no"
    if machine.device_type == "mps" and not machine.bf16:
        return "mixed_precision bf16 needs macOS 14 or later on Apple GPUs: use 'no' (or auto)"
    return None


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


def unified_memory_available(system_available: int | None, gpu_working_set: int | None) -> int | None:
    """On Apple silicon the GPU's memory is the system's RAM: a step may use what the system has free now (the
    models ComfyUI keeps in RAM already count as used) up to the GPU's working-set limit (Metal's recommended
    maximum, about ⅔–¾ of the RAM)."""
    known = [b for b in (system_available, gpu_working_set) if b is not None]
    return min(known) if known else None


def auto_gradient_checkpointing(
    choice: str,
    machine: Machine,
    *,
    batch_size: int,
    resolution: int,
    mixed_precision: str,
    family=None,
) -> bool:
    """auto → on when a step without checkpointing would not fit in the memory available for training (so a
    12–16 GB card or a 16–24 GB Mac trains at 1024², while a 24 GB+ card keeps the ~30% faster steps); off on the
    CPU, where recomputing costs time and memory is not the limit. on / off are kept."""
    if choice in ("on", "off"):
        return choice == "on"
    if choice != "auto":
        raise ValueError(f"gradient_checkpointing must be auto, on or off, got {choice!r}")
    if machine.device_type not in ACCELERATORS or machine.available_bytes is None:
        return False
    needed = training_memory_gib(batch_size, resolution, False, mixed_precision, family)
    return needed > machine.available_bytes / GIB
