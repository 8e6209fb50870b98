"""Every device ComfyUI runs on: the trainer's device, precision and checkpointing decisions as functions of the
capability answers (training/hardware.py) for cuda, mps, xpu, cpu and DirectML; the answers the node takes from
ComfyUI's own model_management (nodes/train_device.py) on an emulated-bf16 NVIDIA card, a Mac, an Intel GPU and
DirectML (the hardware's answers faked, ComfyUI's rules real); `fit`'s device order; no torch.cuda call outside
the one module that asks per device."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from image_alchemy.training import devices
from image_alchemy.training.hardware import (
    Machine,
    auto_gradient_checkpointing,
    auto_mixed_precision,
    precision_problem,
    trainable_problem,
    unified_memory_available,
)
from image_alchemy.training.user_values import from_user_values

GIB = 1024**3
ROOT = Path(__file__).resolve().parent.parent

CUDA_AMPERE = Machine("cuda", bf16=True, fp16=True, autocast=True, available_bytes=24 * GIB)
CUDA_T4 = Machine("cuda", bf16=False, fp16=True, autocast=True, available_bytes=12 * GIB)
CUDA_GTX_1660 = Machine("cuda", bf16=False, fp16=False, autocast=True, available_bytes=6 * GIB)  # fp16 broken
MAC_SONOMA = Machine("mps", bf16=True, fp16=True, autocast=True, available_bytes=12 * GIB)
MAC_VENTURA = Machine("mps", bf16=False, fp16=True, autocast=True, available_bytes=40 * GIB)
MAC_OLD_TORCH = Machine("mps", bf16=True, fp16=True, autocast=False, available_bytes=40 * GIB)
ARC = Machine("xpu", bf16=True, fp16=True, autocast=True, available_bytes=16 * GIB)
XPU_NO_BF16 = Machine("xpu", bf16=False, fp16=True, autocast=True, available_bytes=16 * GIB)
CPU = Machine("cpu")
DIRECTML = Machine("privateuseone", directml=True)


def _checkpointing(machine, batch=1, resolution=1024, precision="bf16"):
    return auto_gradient_checkpointing(
        "auto", machine, batch_size=batch, resolution=resolution, mixed_precision=precision
    )


@pytest.mark.parametrize(
    "machine, precision",
    [
        (CUDA_AMPERE, "bf16"),
        (CUDA_T4, "fp16"),  # bf16 only emulated: several times slower than fp16
        (CUDA_GTX_1660, "no"),  # ComfyUI runs it fp32
        (MAC_SONOMA, "bf16"),
        (MAC_VENTURA, "no"),  # no fp16 on Apple GPUs: torch's MPS GradScaler
        (MAC_OLD_TORCH, "no"),  # no MPS autocast in this torch
        (ARC, "bf16"),
        (XPU_NO_BF16, "fp16"),
        (CPU, "no"),
    ],
)
def test_auto_mixed_precision_per_device(machine, precision):
    assert auto_mixed_precision("auto", machine) == precision
    assert precision_problem(precision, machine) is None  # what auto picks always runs
    assert auto_mixed_precision("bf16", CUDA_T4) == "bf16"  # an explicit choice is kept


def test_explicit_precisions_a_device_cannot_run_are_refused_with_the_alternative():
    assert "use bf16 or no" in precision_problem("fp16", MAC_SONOMA)
    assert "macOS 14" in precision_problem("bf16", MAC_VENTURA)
    assert "autocast on mps" in precision_problem("bf16", MAC_OLD_TORCH)
    assert precision_problem("fp16", CUDA_T4) is None and precision_problem("bf16", ARC) is None
    with pytest.raises(ValueError, match=r"fit: mixed_precision fp16 does not train reliably on Apple GPUs"):
        from_user_values({"mixed_precision": "fp16"}, machine=MAC_SONOMA, where="fit", device="mps")


def test_checkpointing_auto_follows_each_devices_memory():
    assert _checkpointing(CUDA_T4) and not _checkpointing(CUDA_AMPERE)  # 12 GiB free vs 24
    b580 = Machine("xpu", bf16=True, fp16=True, autocast=True, available_bytes=12 * GIB)
    assert _checkpointing(b580) and not _checkpointing(b580, resolution=512) and not _checkpointing(ARC)
    # A 16 GB Mac: ~12 GiB the GPU may take; a 64 GB one has room for the faster steps.
    assert _checkpointing(MAC_SONOMA) and not _checkpointing(MAC_VENTURA, precision="no")
    assert not _checkpointing(CPU)  # the CPU: recomputing costs time, memory is not the limit
    assert not _checkpointing(Machine("cuda", autocast=True))  # memory unknown: the faster steps


def test_auto_gradient_checkpointing_is_on_when_a_step_would_not_fit():
    def auto(batch, vram_gib, device="cuda"):
        available = None if vram_gib is None else vram_gib * GIB
        return _checkpointing(Machine(device, autocast=True, available_bytes=available), batch=batch)

    assert auto(1, 12) and auto(4, 24) and auto(1, 8)  # 12 GB cards and batch 4 on 24 GB need it
    assert not auto(1, 24) and not auto(4, 80)  # room to spare: the faster steps
    assert not auto(1, None, device="cpu")
    assert auto_gradient_checkpointing("on", CPU, batch_size=1, resolution=64, mixed_precision="no")
    small = Machine("cuda", autocast=True, available_bytes=GIB)
    assert not auto_gradient_checkpointing("off", small, batch_size=8, resolution=1024, mixed_precision="bf16")


def test_unified_memory_is_the_ram_free_now_up_to_the_gpus_working_set():
    assert unified_memory_available(18 * GIB, 21 * GIB) == 18 * GIB  # ComfyUI's models already hold the rest
    assert unified_memory_available(30 * GIB, 21 * GIB) == 21 * GIB  # Metal's limit for one process
    assert unified_memory_available(None, 21 * GIB) == 21 * GIB and unified_memory_available(None, None) is None


def test_directml_and_unknown_devices_cannot_train_and_say_what_to_use():
    problem = trainable_problem(DIRECTML)
    assert "DirectML" in problem and "ROCm" in problem and "--cpu" in problem
    assert "'npu' device" in trainable_problem(Machine("npu")) and "--cpu" in trainable_problem(Machine("npu"))
    assert all(trainable_problem(m) is None for m in (CUDA_AMPERE, MAC_SONOMA, ARC, CPU))
    with pytest.raises(ValueError, match=r"TrainSubjectLoRA: ComfyUI runs on DirectML"):
        from_user_values({}, machine=DIRECTML)


# ComfyUI's answers: its own model_management code, with the hardware's answers it reads faked.


@pytest.fixture
def mm(comfy_dir, monkeypatch):
    from tiny_models import factory

    factory.use_comfyui(comfy_dir)
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "cpu_state", mm.CPUState.GPU)
    monkeypatch.setattr(mm, "directml_enabled", False)
    monkeypatch.setattr(mm, "xpu_available", False)
    return mm


def _comfy_machine():
    from image_alchemy.nodes.train_device import comfy_machine

    return comfy_machine()


def test_comfy_on_an_nvidia_card_that_emulates_bf16_trains_fp16(mm, monkeypatch):
    t4 = SimpleNamespace(major=7, minor=5, name="Tesla T4", total_memory=16 * GIB, gcnArchName="")
    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: t4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (11 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 1 * GIB)
    device, machine = _comfy_machine()
    assert device.type == "cuda"
    assert machine == Machine("cuda", bf16=False, fp16=True, autocast=True, available_bytes=12 * GIB)
    settings = from_user_values({"token": "iklan", "class_word": "dog"}, machine=machine, device=str(device))
    assert settings.mixed_precision == "fp16" and settings.gradient_checkpointing  # 12 GiB: on at 1024²


@pytest.mark.parametrize("macos, precision", [((14, 5), "bf16"), ((13, 6), "no")])
def test_comfy_on_a_mac_trains_bf16_from_macos_14_in_the_ram_it_shares(mm, monkeypatch, macos, precision):
    monkeypatch.setattr(mm, "cpu_state", mm.CPUState.MPS)
    monkeypatch.setattr(mm, "mac_version", lambda: macos)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 21 * GIB)  # a 32 GB Mac
    monkeypatch.setattr(devices, "_system_available", lambda: 12 * GIB)  # ComfyUI's models hold the rest
    device, machine = _comfy_machine()
    assert device.type == "mps" and machine.available_bytes == 12 * GIB
    settings = from_user_values({"token": "iklan", "class_word": "dog"}, machine=machine, device=str(device))
    assert settings.mixed_precision == precision and settings.gradient_checkpointing


def test_comfy_on_an_intel_gpu_trains_bf16_where_it_computes_it(mm, monkeypatch):
    monkeypatch.setattr(mm, "xpu_available", True)
    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("xpu", 0))
    monkeypatch.setattr(torch.xpu, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda device=None: SimpleNamespace(has_fp16=True))
    monkeypatch.setattr(torch.xpu, "mem_get_info", lambda device=None: (15 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.xpu, "memory_reserved", lambda device=None: 0)
    device, machine = _comfy_machine()
    assert machine == Machine("xpu", bf16=True, fp16=True, autocast=True, available_bytes=15 * GIB)
    assert from_user_values({}, machine=machine, device=str(device)).mixed_precision == "bf16"


def test_comfy_on_directml_is_refused_before_anything_is_encoded(mm, monkeypatch, tiny_models):
    """checked_settings is the node's first step: the refusal comes before any photo is encoded."""
    from image_alchemy.nodes.train_checks import checked_settings

    monkeypatch.setattr(mm, "cpu_state", mm.CPUState.CPU)
    model = _tiny_sdxl_model(tiny_models)
    monkeypatch.setattr(mm, "directml_enabled", True)  # --directml: its device wins over every other
    monkeypatch.setattr(mm, "directml_device", torch.device("privateuseone", 0), raising=False)
    device, machine = _comfy_machine()
    assert device.type == "privateuseone" and machine.directml
    with pytest.raises(ValueError, match=r"TrainSubjectLoRA: ComfyUI runs on DirectML .* ROCm"):
        checked_settings(model, None, torch.rand(2, 64, 64, 3), {"token": "iklan", "class_word": "dog"}, None)


def test_comfy_with_cpu_trains_fp32_on_the_cpu(mm, monkeypatch):
    monkeypatch.setattr(mm, "cpu_state", mm.CPUState.CPU)
    device, machine = _comfy_machine()
    assert device == torch.device("cpu") and machine == Machine("cpu")
    assert from_user_values({}, machine=machine, device="cpu").mixed_precision == "no"


def _tiny_sdxl_model(tiny_models):
    import json

    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(tiny_models["unet"]), safe_load=True, return_metadata=True)
    config = comfy.supported_models.SDXL(json.loads(metadata["tiny_sdxl.unet_config"]))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(sd, "model.diffusion_model.", device=torch.device("cpu"))
    model.load_model_weights(sd, "model.diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


# `python -m training fit`: torch's answers.


def test_fit_picks_cuda_then_xpu_then_mps_then_the_cpu(monkeypatch):
    assert devices.pick("auto") == torch.device("cpu")  # this machine: no GPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.pick("auto") == torch.device("mps")
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    assert devices.pick("auto") == torch.device("xpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick("auto") == torch.device("cuda")
    assert devices.pick("cuda:1") == torch.device("cuda", 1)


def test_fit_refuses_a_device_torch_does_not_have():
    with pytest.raises(ValueError, match=r"device 'mps': this torch finds no mps device; available: cpu"):
        devices.pick("mps")
    with pytest.raises(ValueError, match=r"not a torch device: use auto, cpu"):
        devices.pick("gpu")
    from image_alchemy.training.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["fit", "--model", "m", "--images", str(ROOT), "--out", "o.safetensors", "--token", "t",
                    "--class-word", "c", "--device", "xpu"])  # fmt: skip


def test_no_torch_cuda_call_outside_the_per_device_module():
    """training/devices.py asks each device's own module; every other training or node file goes through it."""
    allowed = {ROOT / "training" / "devices.py"}
    calls = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("training", "nodes")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"torch\.cuda\.|GradScaler\(\"cuda|autocast\(\"cuda|device_type=\"cuda", line)
    ]
    assert calls == []


@pytest.mark.parametrize("arch, precision", [("gfx1030", "fp16"), ("gfx1100", "bf16"), (None, "fp16")])
def test_fit_asks_torch_with_comfyuis_amd_rule(monkeypatch, arch, precision):
    """`fit`'s answers come from torch, which says bf16 for every AMD GPU: RDNA2 (gfx1030) only emulates it.
    ``None``: an NVIDIA T4 (compute capability 7.5)."""
    monkeypatch.setattr(torch.version, "hip", "6.4" if arch else None)
    props = SimpleNamespace(major=7, minor=5, gcnArchName=arch or "", total_memory=16 * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (16 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    machine = devices.torch_machine(torch.device("cuda", 0))
    assert machine.available_bytes == 16 * GIB and auto_mixed_precision("auto", machine) == precision
