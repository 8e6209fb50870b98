"""What the ComfyUI that runs TrainSubjectLoRA answers about its device: the capability answers from which the
trainer's device, precision and checkpointing are decided (training/hardware.py). The trainer trains where ComfyUI
computes, with ComfyUI's own answers (its --cpu, --force-fp32, --directml, its bf16 rules for AMD and Apple)."""

from __future__ import annotations

import comfy.model_management as mm
import torch

from ..training import devices
from ..training.hardware import ACCELERATORS, Machine


def comfy_machine() -> tuple[torch.device, Machine]:
    """ComfyUI's device and its answers about it."""
    device = mm.get_torch_device()
    if mm.is_directml_enabled():
        return device, Machine(device.type, directml=True)
    if device.type not in ACCELERATORS:  # the CPU, or a device the trainer refuses (npu, mlu, …)
        return device, Machine(device.type)
    return device, Machine(
        device.type,
        bf16=bool(mm.should_use_bf16(device)),  # native only: False on GPUs that emulate it, and before macOS 14
        fp16=bool(mm.should_use_fp16(device)),
        autocast=devices.autocast_available(device.type),
        available_bytes=devices.memory_for_training(device),
    )
