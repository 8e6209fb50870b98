"""Our LoRA training step vs two references, on each family's tiny random model (SDXL, SD1.5), in one process.

- ``vs_diffusers_example``: a loop shaped like diffusers' train_dreambooth_lora_sdxl.py without caching: every
  step runs the VAE on the pixels and both text encoders on the prompt, then the UNet forward/backward.
  Printed as reference time / our time (goal ≥ 2: caching the encodings is the point).
- ``vs_bare_peft``: the bare minimum — the same peft LoRA UNet, forward + MSE + backward + AdamW step on
  ready tensors. Printed as our time / bare time (goal ≤ 1.1: our loop adds little).
Step times are medians over interleaved rounds after warm-up; the tiny VAE is TAESD, so on real SDXL (a KL
VAE at 1024²) the example-style loop is slower still. Each line names its family: ``name[family]: value``.
Run: .venv/bin/python bench/train_step.py [--family all|sdxl|sd15] [--size 256] [--batch 4] [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = ROOT / ".cache" / "comfyui"


def setup(tmp: Path, size: int, family: str):
    """The family's tiny pipeline folder and the subject encoded once (what the node hands to the trainer)."""
    if "image_alchemy" not in sys.modules:
        sys.path.append(str(COMFY_DIR))
        sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
        spec = importlib.util.spec_from_file_location(
            "image_alchemy", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["image_alchemy"] = module
        spec.loader.exec_module(module)
    from tiny_models import factory, pipeline

    factory.use_comfyui(COMFY_DIR)
    models = {**factory.write_tiny_sdxl(tmp / "tiny"), **factory.write_tiny_sd15(tmp / "tiny")}
    writer = pipeline.write_tiny_sd15_pipeline if family == "sd15" else pipeline.write_tiny_pipeline
    pipe_dir = writer(models, tmp / f"pipe_{family}", COMFY_DIR)
    from image_alchemy.training.settings import TrainSettings

    # One micro-batch per step, the unit the reference loops below take.
    settings = TrainSettings(
        token="iklan", class_word="disc", rank=4, device="cpu", gradient_accumulation=1, model_family=family
    )
    data = pipeline.encode_subject_data(pipe_dir, settings, size=size)
    from image_alchemy.training.fit import load_images

    pixels, _ = load_images(str(pipe_dir.parent / f"subject_{size}_4"), size)
    return pipe_dir, data, pixels, settings


def time_ours(pipe_dir, data, settings, steps: int) -> float:
    """Median seconds per step of training.trainer.train (the function the child process runs)."""
    from diffusers import UNet2DConditionModel
    from image_alchemy.training.trainer import train

    unet = UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet"))
    stamps = []
    train(
        unet,
        data,
        settings.__class__(**{**settings.__dict__, "steps": steps}),
        progress=lambda e: stamps.append(time.perf_counter()),
    )
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def _peft_unet(pipe_dir, settings):
    from diffusers import UNet2DConditionModel
    from image_alchemy.training.trainer import build_lora_unet

    unet = build_lora_unet(UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet")), settings, torch.device("cpu"))
    return unet, torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)


def time_diffusers_example(pipe_dir, pixels, settings, batch: int, steps: int) -> float:
    """Per step: VAE encode + the text encoder(s) + UNet forward/backward (no caching)."""
    from diffusers import DDPMScheduler
    from image_alchemy.training.families import family_named
    from image_alchemy.training.fit import load_pipeline

    family = family_named(settings.model_family)
    pipe = load_pipeline(str(pipe_dir), family=family)
    unet, optimizer = _peft_unet(pipe_dir, settings)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    size = pixels.shape[-1]
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        x = pixels[torch.arange(step * batch, (step + 1) * batch) % len(pixels)]
        with torch.no_grad():
            latents = pipe.vae.encode(x).latents * pipe.vae.config.scaling_factor
            cond = {k: v.expand(batch, *v.shape[1:]) for k, v in family.encode_prompt(pipe, settings.prompt).items()}
        cond.update(family.square_size_conditioning(size, size, batch))
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,))
        pred = family.predict(unet, scheduler.add_noise(latents, noise, t), t, cond)
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def time_bare_peft(pipe_dir, data, settings, batch: int, steps: int) -> float:
    """The same peft LoRA UNet on ready tensors: forward + MSE + backward + AdamW, nothing else."""
    from image_alchemy.training.families import family_named

    family = family_named(settings.model_family)
    unet, optimizer = _peft_unet(pipe_dir, settings)
    n = data.latents.shape[0]
    idx = torch.arange(batch) % n
    latents = data.latents[idx]
    cond = {
        k: v[idx] if v.shape[0] == n else v.expand(batch, *v.shape[1:])
        for k, v in data.tensors().items()
        if k in family.conditioning
    }
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(latents)
        pred = family.predict(unet, latents + noise, torch.randint(0, 1000, (batch,)), cond)
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("all", "sdxl", "sd15"), default="all")
    parser.add_argument("--size", type=int, default=256, help="pixels (256 → 32×32 latents)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="steps per timing round (first one is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()
    for family in ("sdxl", "sd15") if args.family == "all" else (args.family,):
        with tempfile.TemporaryDirectory() as tmp:
            pipe_dir, data, pixels, settings = setup(Path(tmp), args.size, family)
            settings.batch_size = args.batch
            ours, example, bare = [], [], []
            for _ in range(args.rounds):
                ours.append(time_ours(pipe_dir, data, settings, args.steps + 1))
                example.append(time_diffusers_example(pipe_dir, pixels, settings, args.batch, args.steps))
                bare.append(time_bare_peft(pipe_dir, data, settings, args.batch, args.steps))
        ours, example, bare = (statistics.median(v) for v in (ours, example, bare))
        print(f"train_step_ours_s[{family}]: {ours:.4f}")
        print(f"train_step_diffusers_example_s[{family}]: {example:.4f}")
        print(f"train_step_bare_peft_s[{family}]: {bare:.4f}")
        print(f"train_step_vs_diffusers_example[{family}]: {example / ours:.2f}")
        print(f"train_step_vs_bare_peft[{family}]: {ours / bare:.2f}")


if __name__ == "__main__":
    main()
