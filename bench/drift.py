"""Drift vs subject fit of the drift-free options, on the tiny random SDXL-architecture model, in one process.

Trains the same subject with the same seed and steps under: plain (paper 001), prior preservation, drift
penalty (delta), APT (augmentation + feature statistics + attention alignment), APT's loss weighting
alone, then measures on the trained UNet
- subject_loss: ε-prediction MSE on the subject latents with the training prompt (fixed noise and timesteps);
- drift: mean squared difference between base (adapter off) and fine-tuned noise predictions on held-out
  class prompts that do not contain the token, at fixed noisy latents and timesteps.
Prints a markdown table, then `name: ratio` lines: drift and subject loss vs plain (goal: drift ≤ 0.7 at
subject loss ≤ 1.1), and the cost per step of each option vs plain (median step time, same run).
Run: .venv/bin/python bench/drift.py [--size 128] [--steps 150] [--cost-steps 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import setup  # noqa: E402  (same tiny pipeline and encoded subject as the step benchmark)

HELD_OUT = [
    "a disc on a beach",
    "a red disc in the snow",
    "a drawing of a disc",
    "a disc on a wooden table",
    "two discs in a garden",
    "a photo of a cat",
    "a city street at night",
    "a bowl of fruit",
]
CONFIGS = {
    "plain": {},
    "prior": {"prior_images": 8},
    "drift_delta": {"drift_penalty": "delta"},
    "apt": {"apt_augment": True, "apt_features": True, "apt_attention": True},
    "apt_loss_weighting": {"apt_loss_weighting": True},
}
COST_CONFIGS = {
    **CONFIGS,
    "drift_params": {"drift_penalty": "params"},
    "apt_indicator_only": {"apt_augment": True, "apt_loss_weighting": True},
    "apt_features": {"apt_features": True},
    "apt_attention": {"apt_attention": True},
}


def _text(pipe, prompts):
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


@torch.no_grad()
def _predict(unet, x, t, embeds, pooled, size):
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * len(x), dtype=torch.float32)
    return unet(x, t, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


def evaluate(unet, pipe, data, settings, size: int) -> dict[str, float]:
    from image_alchemy.training.lora_hooks import adapter_disabled
    from image_alchemy.training.schedule import noise_scheduler

    unet.eval()
    gen = torch.Generator().manual_seed(1234)
    scheduler = noise_scheduler(settings)
    n = data.latents.shape[0]
    subject = []
    for _ in range(8):
        noise = torch.randn(data.latents.shape, generator=gen)
        t = torch.randint(0, 1000, (n,), generator=gen)
        pred = _predict(
            unet,
            scheduler.add_noise(data.latents, noise, t),
            t,
            data.prompt_embeds.expand(n, -1, -1),
            data.pooled_prompt_embeds.expand(n, -1),
            size,
        )
        subject.append(torch.mean((pred - noise) ** 2).item())
    embeds, pooled = _text(pipe, HELD_OUT)
    m, h = len(HELD_OUT), data.latents.shape[-1]
    drift = []
    for _ in range(4):
        x0 = torch.randn(m, 4, h, h, generator=gen) * data.latents.std()
        noise = torch.randn(m, 4, h, h, generator=gen)
        t = torch.randint(0, 1000, (m,), generator=gen)
        x = scheduler.add_noise(x0, noise, t)
        tuned = _predict(unet, x, t, embeds, pooled, size)
        with adapter_disabled(unet):
            base = _predict(unet, x, t, embeds, pooled, size)
        drift.append(torch.mean((tuned - base) ** 2).item())
    return {"subject_loss": statistics.mean(subject), "drift": statistics.mean(drift)}


def train_one(pipe_dir, data, settings, values: dict, steps: int):
    from diffusers import UNet2DConditionModel
    from image_alchemy.training.trainer import train

    unet = UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet"))
    stamps = []
    run = dataclasses.replace(settings, steps=steps, **values)
    train(unet, data, run, progress=lambda e: stamps.append(time.perf_counter()))
    step_s = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])) if len(stamps) > 3 else float("nan")
    return unet, step_s


def prepare(pipe_dir, data, settings, size: int):
    """Adds what the options need to the encoded subject: class images (8, drawn by the base pipeline) and
    APT's augmented views."""
    from diffusers import StableDiffusionXLPipeline
    from image_alchemy.training.augment import augmented_views
    from image_alchemy.training.fit import add_class_data, encode_latents, load_images

    pipe = StableDiffusionXLPipeline.from_pretrained(str(pipe_dir), dtype=torch.float32)
    with_prior = dataclasses.replace(settings, prior_images=8)
    add_class_data(pipe, data, with_prior, size, model_hash="bench", steps=20)
    pixels, _ = load_images(str(pipe_dir.parent / f"subject_{size}_4"), size)
    data.augmented_latents = encode_latents(
        pipe.vae, augmented_views(pixels, settings.apt_views, settings.seed)[0], settings.seed
    )
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="pixels (128 → 16×16 latents)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cost-steps", type=int, default=12, help="steps per cost measurement (0: skip)")
    parser.add_argument("--only", nargs="*", help="config names to train (default: all four)")
    parser.add_argument("--set", nargs="*", default=[], help="extra settings for every config, e.g. drift_weight=2")
    args = parser.parse_args()
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key] = (
            type(getattr(_default_settings(), key) or 0.0)(value) if value not in ("True", "False") else value == "True"
        )
    with tempfile.TemporaryDirectory() as tmp:
        pipe_dir, data, _pixels, settings = setup(Path(tmp), args.size)
        settings = dataclasses.replace(settings, batch_size=4, learning_rate=args.lr, **extra)
        pipe = prepare(pipe_dir, data, settings, args.size)
        rows = {}
        for name in args.only or list(CONFIGS):
            unet, _ = train_one(pipe_dir, data, settings, CONFIGS[name], args.steps)
            rows[name] = evaluate(unet, pipe, data, settings, args.size)
        costs = {}
        if args.cost_steps:
            for name, values in COST_CONFIGS.items():
                costs[name] = train_one(pipe_dir, data, settings, values, args.cost_steps)[1]
    print(
        f"| option | subject loss | drift | subject loss vs plain | drift vs plain |  ({args.steps} steps, "
        f"{args.size} px, lr {args.lr:g}, batch 4, seed {settings.seed})"
    )
    print("|---|---|---|---|---|")
    plain = rows.get("plain")
    for name, row in rows.items():
        rel = (
            f"{row['subject_loss'] / plain['subject_loss']:.3f} | {row['drift'] / plain['drift']:.3f}"
            if plain
            else "- | -"
        )
        print(f"| {name} | {row['subject_loss']:.5f} | {row['drift']:.6f} | {rel} |")
    for name, row in rows.items():
        if plain and name != "plain":
            print(f"drift_{name}_vs_plain: {row['drift'] / plain['drift']:.3f}")
            print(f"subject_loss_{name}_vs_plain: {row['subject_loss'] / plain['subject_loss']:.3f}")
    for name, seconds in costs.items():
        print(f"step_s_{name}: {seconds:.4f}")
        if name != "plain":
            print(f"step_cost_{name}_vs_plain: {seconds / costs['plain']:.2f}")


def _default_settings():
    from image_alchemy.training.settings import TrainSettings

    return TrainSettings(gradient_accumulation=1)  # the setting the README's drift figures were measured with


if __name__ == "__main__":
    main()
