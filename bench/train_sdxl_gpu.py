"""Full-size SDXL LoRA training speed and memory: random-init SDXL UNet (2.6 B parameters, the real config),
1024² (128×128 latents), batch 1, bf16, gradient checkpointing, rank 16 on the attention projections —
through training.trainer.train, the function the node's child process runs.

Prints ``sdxl_train_it_per_s`` and ``sdxl_train_peak_gpu_gb`` (goal on an H100: ≥ 4 it/s, ≤ 12 GB).
``--tiny`` runs the same code on the tiny SDXL-architecture config on the CPU (a smoke test of this script).
Run: .venv/bin/python bench/train_sdxl_gpu.py [--steps 30] [--no-checkpointing] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SDXL_UNET_CONFIG = {  # ComfyUI's unet_config for SDXL base 1.0
    "model_channels": 320,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
    "context_dim": 2048,
    "num_head_channels": 64,
    "adm_in_channels": 2816,
    "use_linear_in_transformer": True,
    "in_channels": 4,
    "out_channels": 4,
}
TINY_UNET_CONFIG = {
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": [1, 1],
    "transformer_depth": [0, 1],
    "transformer_depth_output": [0, 0, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 64,
    "num_head_channels": 8,
    "adm_in_channels": 32 + 1536,
    "use_linear_in_transformer": True,
    "in_channels": 4,
    "out_channels": 4,
}


def import_training():
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import import_pack

    import_pack()
    from image_alchemy.training import settings, trainer, unet

    return settings, trainer, unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--tiny", action="store_true", help="tiny config, 256², fp32, CPU (smoke test)")
    args = parser.parse_args()
    settings_mod, trainer, unet_mod = import_training()
    from diffusers import UNet2DConditionModel

    tiny = args.tiny
    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("train_sdxl_gpu.py needs a CUDA GPU (use --tiny for a CPU smoke test)")
    comfy_config = TINY_UNET_CONFIG if tiny else SDXL_UNET_CONFIG
    config = unet_mod.diffusers_unet_config(comfy_config)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config)  # random init: no weights are downloaded
    params = sum(p.numel() for p in unet.parameters())
    latent, ctx, pooled = (32, 64, 32) if tiny else (128, 2048, 1280)
    gen = torch.Generator().manual_seed(0)
    data = trainer.TrainingData(
        latents=torch.randn(4, 4, latent, latent, generator=gen) * 0.8,
        prompt_embeds=torch.randn(1, 77, ctx, generator=gen),
        pooled_prompt_embeds=torch.randn(1, pooled, generator=gen),
        time_ids=torch.tensor([[latent * 8, latent * 8, 0, 0, latent * 8, latent * 8]] * 4, dtype=torch.float32),
    )
    settings = settings_mod.TrainSettings(
        token="iklan",
        class_word="dog",
        rank=args.rank,
        steps=args.steps,
        batch_size=1,
        gradient_accumulation=1,
        mixed_precision="no" if tiny else "bf16",
        gradient_checkpointing=not args.no_checkpointing,
        device=device,
        learning_rate=1e-4,
    )
    if not tiny:
        unet.to(torch.bfloat16)  # cast before measuring: the peak is training's, not the fp32 init's
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps = []

    def on_step(_event):
        if not tiny:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    trainer.train(unet, data, settings, progress=on_step)
    warm = stamps[min(5, len(stamps) - 2) :]
    step_s = statistics.median(b - a for a, b in zip(warm, warm[1:]))
    print(f"sdxl_unet_params_m: {params / 1e6:.1f}")
    print(f"sdxl_train_it_per_s: {1.0 / step_s:.2f}")
    if not tiny:
        print(f"sdxl_train_peak_gpu_gb: {torch.cuda.max_memory_allocated() / 2**30:.2f}")
        print(f"sdxl_gpu: {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
