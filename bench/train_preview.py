"""Cost of the sample previews as a share of plain training time, on the tiny random SDXL-architecture model, in
one process: median seconds per training step (the default batch 1 × gradient accumulation 4) and per preview
(the default preview_steps, the training prompt and preview_prompt with CFG), both through the functions the
trainer runs. Printed:
- ``preview_s`` / ``step_s``: medians;
- ``preview_cost_at_default``: preview_s / (preview_every · step_s) at the default interval (goal ≤ 0.10);
- ``unet_passes_ratio``: the same ratio counted in UNet image passes (a backward ≈ 2 forwards), which is what it
  comes to on a full-size model where the UNet dominates.
Run: .venv/bin/python bench/train_preview.py [--size 256] [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import setup  # noqa: E402  (the tiny pipeline and encoded subject)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        pipe_dir, data, _pixels, settings = setup(Path(tmp), args.size)
        from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
        from image_alchemy.training.preview import PreviewConditioning, Previewer
        from image_alchemy.training.settings import TrainSettings
        from image_alchemy.training.trainer import build_lora_unet, train

        defaults = TrainSettings()
        settings = TrainSettings(
            **{
                **settings.__dict__,
                "gradient_accumulation": defaults.gradient_accumulation,
                "batch_size": defaults.batch_size,
                "steps": args.steps,
                "preview_every": 0,
            }
        )
        pipe = StableDiffusionXLPipeline.from_pretrained(str(pipe_dir), dtype=torch.float32)
        rows = [
            pipe.encode_prompt(p, device="cpu", do_classifier_free_guidance=False) for p in settings.preview_prompts
        ]
        negative = pipe.encode_prompt("", device="cpu", do_classifier_free_guidance=False)
        cond = PreviewConditioning(
            torch.cat([r[0] for r in rows]), torch.cat([r[2] for r in rows]), negative[0], negative[2]
        )
        step_times, preview_times = [], []
        for _ in range(args.rounds):
            stamps = []
            train(
                UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet")),
                data,
                settings,
                progress=lambda e: stamps.append(time.perf_counter()),
            )
            step_times += [b - a for a, b in zip(stamps[1:], stamps[2:])]
            unet = build_lora_unet(
                UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet")), settings, torch.device("cpu")
            )
            previewer = Previewer(settings, cond, tuple(data.latents.shape[1:]), Path(tmp))
            for i in range(3):
                started = time.perf_counter()
                previewer.render(unet, i + 1, torch.float32, torch.device("cpu"))
                if i:  # the first one warms up
                    preview_times.append(time.perf_counter() - started)
        step_s, preview_s = statistics.median(step_times), statistics.median(preview_times)
        prompts = len(settings.preview_prompts)
        passes_preview = defaults.preview_steps * 2 * prompts
        passes_step = 3 * defaults.gradient_accumulation * defaults.batch_size
        print(f"load_average: {os.getloadavg()[0]:.2f}")
        print(f"size: {args.size}")
        print(f"step_s: {step_s:.4f}")
        print(f"preview_s: {preview_s:.4f}")
        print(f"preview_every: {defaults.preview_every}")
        print(f"preview_cost_at_default: {preview_s / (defaults.preview_every * step_s):.4f}")
        print(f"unet_passes_ratio: {passes_preview / (defaults.preview_every * passes_step):.4f}")


if __name__ == "__main__":
    main()
