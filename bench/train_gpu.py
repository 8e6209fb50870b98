"""Full-size LoRA training speed and memory on a GPU, per model family: a random-init UNet of the family's real
config (SDXL: 2.6 B parameters), at its native size (SDXL: 1024², 128×128 latents), batch 1, the machine's mixed
precision (bf16 where native), gradient checkpointing, rank 16 on the attention projections — through
training.trainer.train, the function the node's child process runs.

Prints ``<family>_train_it_per_s`` and ``<family>_train_peak_gpu_gb`` (SDXL goal on an H100: ≥ 4 it/s, ≤ 12 GB),
on whichever GPU torch finds (cuda — NVIDIA or ROCm —, xpu, mps; training/devices.py).
``--dry-run`` runs the same code on the family's tiny config on the CPU for a few steps (tests/test_bench_gpu.py
runs it, so the script is known to work the day a GPU is at hand).
Run: .venv/bin/python bench/train_gpu.py --family sdxl [--steps 30] [--no-checkpointing] [--optimizer adamw]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))  # the families' full-size and tiny configs, the pack import

from tiny_models.factory import TINY_SD15_UNET_CONFIG, TINY_UNET_CONFIG  # noqa: E402
from tiny_models.full_size import SD15_LDM_UNET, SDXL_LDM_UNET  # noqa: E402


@dataclass(frozen=True)
class BenchFamily:
    """What the bench needs of a family beyond its declaration (training/families): ComfyUI's unet_config at full
    and tiny size, the latent side at its native resolution (and in the dry run), its text conditioning widths
    (context, pooled; 0 where the family has no pooled text)."""

    full: dict
    tiny: dict
    latent: int
    tiny_latent: int
    context: int
    pooled: int
    tiny_context: int
    tiny_pooled: int


# One line per family (its name as training/families declares it).
FAMILIES = {
    "sdxl": BenchFamily(SDXL_LDM_UNET, TINY_UNET_CONFIG, 128, 8, 2048, 1280, 64, 32),
    "sd15": BenchFamily(SD15_LDM_UNET, TINY_SD15_UNET_CONFIG, 64, 8, 768, 0, 32, 0),
}


def import_training():
    from pack_import import import_pack

    import_pack()
    from image_alchemy.training import devices, families, hardware, optimizers, settings, trainer

    return devices, families, hardware, optimizers, settings, trainer


def parse_args(argv=None, optimizers=("adamw",)) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="sdxl", help="the model family to train")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 30; dry run 3)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--optimizer", choices=optimizers, default="adamw")
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--device", default="auto", help="auto (cuda, xpu, mps), or a torch device")
    parser.add_argument("--dry-run", action="store_true", help="tiny config, fp32, CPU, 3 steps: checks the script")
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, float | str]:
    devices, families, hardware, optimizers, settings_mod, trainer = import_training()
    args = parse_args(argv, optimizers.offered())
    from diffusers import UNet2DConditionModel

    family, declared = FAMILIES[args.family], families.family_named(args.family)
    device = torch.device("cpu") if args.dry_run else devices.pick(args.device)
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("train_gpu.py needs a GPU (cuda, xpu or mps); --dry-run checks it on the CPU")
    comfy_config = family.tiny if args.dry_run else family.full
    latent = family.tiny_latent if args.dry_run else family.latent
    context = family.tiny_context if args.dry_run else family.context
    pooled = family.tiny_pooled if args.dry_run else family.pooled
    steps = args.steps or (3 if args.dry_run else 30)
    precision = hardware.auto_mixed_precision("auto", devices.torch_machine(device))
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**declared.denoiser_config(comfy_config))  # random init: no download
    params = sum(p.numel() for p in unet.parameters())
    gen = torch.Generator().manual_seed(0)
    size = latent * 8
    cond = torch.randn(1, 77, context, generator=gen)
    data = trainer.TrainingData(
        latents=torch.randn(4, declared.latent_channels, latent, latent, generator=gen) * 0.8,
        **declared.text_conditioning(cond, torch.randn(1, pooled, generator=gen) if pooled else None),
        **declared.square_size_conditioning(size, size, 4),
    )
    settings = settings_mod.TrainSettings(
        token="iklan",
        class_word="dog",
        rank=args.rank,
        steps=steps,
        batch_size=1,
        gradient_accumulation=1,
        resolution=size,
        mixed_precision=precision,
        gradient_checkpointing=not args.no_checkpointing,
        device=str(device),
        model_family=args.family,
        learning_rate=1e-4,
        optimizer=args.optimizer,
    )
    if precision != "no":
        unet.to(trainer.weight_dtype(settings))  # cast before measuring: the peak is training's, not the fp32 init's
    devices.synchronize(device)
    devices.reset_peak_memory(device)
    stamps = []

    def on_step(_event):
        devices.synchronize(device)  # the step's kernels done: the time is the step's
        stamps.append(time.perf_counter())

    trainer.train(unet, data, settings, progress=on_step)
    warm = stamps[min(5, len(stamps) - 2) :]
    step_s = statistics.median(b - a for a, b in zip(warm, warm[1:]))
    name = args.family
    results: dict[str, float | str] = {
        f"{name}_unet_params_m": round(params / 1e6, 1),
        f"{name}_train_it_per_s": round(1.0 / step_s, 2),
        f"{name}_mixed_precision": precision,
        f"{name}_device": devices.device_name(device),
    }
    peak = devices.peak_memory_bytes(device)
    if peak is not None:
        results[f"{name}_train_peak_gpu_gb"] = round(peak / 2**30, 2)
    for key, value in results.items():
        print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    main()
