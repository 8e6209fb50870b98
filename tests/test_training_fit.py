"""`python -m training fit` on a tiny diffusers SDXL folder; the LoRA it writes lowers the denoising error on
the subject, loads in diffusers (`load_lora_weights`) and maps every key in ComfyUI's `comfy.lora`."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_alchemy.training.settings import TrainSettings
from safetensors.torch import load_file
from tiny_models.pipeline import encode_subject_data
from tiny_models.subjects import write_subject_folder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fitted(pipeline_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    images = write_subject_folder(folder / "photos", count=4, size=128)
    out = folder / "iklan_disc.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "training",
        "fit",
        "--model",
        str(pipeline_dir),
        "--images",
        str(images),
        "--token",
        "iklan",
        "--class-word",
        "disc",
        "--out",
        str(out),
        "--resolution",
        "128",
        "--steps",
        "40",
        "--gradient-accumulation",
        "1",
        "--batch-size",
        "4",
        "--rank",
        "4",
        "--learning-rate",
        "1e-3",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return pipeline_dir, out, events


def _pipeline(pipe_dir):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(str(pipe_dir), dtype=torch.float32)


@torch.no_grad()
def _denoising_error(unet, data, seed=0, rounds=6) -> float:
    """Mean ε-prediction error on the subject latents over fixed noise and timesteps."""
    from image_alchemy.training.schedule import noise_scheduler

    scheduler, gen, total = noise_scheduler(TrainSettings()), torch.Generator().manual_seed(seed), 0.0
    n = data.latents.shape[0]
    for _ in range(rounds):
        noise = torch.randn(data.latents.shape, generator=gen)
        t = torch.randint(50, 950, (n,), generator=gen)
        noisy = scheduler.add_noise(data.latents, noise, t)
        pred = unet(
            noisy,
            t,
            data.prompt_embeds.expand(n, -1, -1),
            added_cond_kwargs={"text_embeds": data.pooled_prompt_embeds.expand(n, -1), "time_ids": data.time_ids},
        ).sample
        total += torch.mean((pred - noise) ** 2).item()
    return total / rounds


def test_fit_trains_and_the_lora_lowers_denoising_error_in_diffusers(fitted):
    pipe_dir, out, events = fitted
    steps = [e for e in events if "step" in e]
    assert len(steps) == 40 and events[-1]["done"] and Path(events[-1]["output"]) == out
    first, last = sum(e["loss"] for e in steps[:10]) / 10, sum(e["loss"] for e in steps[-10:]) / 10
    assert last < first

    pipe = _pipeline(pipe_dir)
    data = encode_subject_data(pipe_dir, TrainSettings(token="iklan", class_word="disc"), size=128)
    base_error = _denoising_error(pipe.unet, data)
    pipe.load_lora_weights(str(out.parent), weight_name=out.name, adapter_name="subject")
    lora_layers = {name: m for name, m in pipe.unet.named_modules() if hasattr(m, "lora_B") and "subject" in m.lora_B}
    file_modules = {k.split(".")[0] for k in load_file(str(out)) if k.endswith(".lora_down.weight")}
    # Every module of the file became a LoRA layer holding the trained (non-zero) up weights.
    assert len(lora_layers) == len(file_modules) == 32
    assert all(m.lora_B["subject"].weight.abs().sum() > 0 for m in lora_layers.values())
    lora_error = _denoising_error(pipe.unet, data)
    assert lora_error < base_error
    pipe.disable_lora()
    assert _denoising_error(pipe.unet, data) == pytest.approx(base_error, rel=1e-5)


def test_lora_maps_every_key_in_comfyui(fitted, tiny_models, caplog):
    import comfy.lora
    import comfy.supported_models
    from tiny_models.factory import TINY_UNET_CONFIG, UNET_PREFIX

    _pipe_dir, out, _events = fitted
    model_config = comfy.supported_models.SDXL(dict(TINY_UNET_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(load_file(str(tiny_models["unet"])), UNET_PREFIX, device=torch.device("cpu"))
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    lora = load_file(str(out))
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, key_map)
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == sum(k.endswith(".lora_down.weight") for k in lora) == 32


def test_fit_takes_photos_of_three_sizes_with_their_masks_each_at_its_own_size(pipeline_dir, tmp_path):
    """A folder of a square, a 3:1 (subject at its left edge) and a 2.5:1 photo with a folder of masks named like
    them: the LoRA records each photo's own size and a crop that holds its whole subject."""
    import numpy as np
    from PIL import Image

    photos_dir, masks_dir = tmp_path / "photos", tmp_path / "masks"
    photos_dir.mkdir()
    masks_dir.mkdir()
    shapes = {"a": (240, 240, 80, 160, 90, 150), "b": (128, 384, 40, 90, 0, 40), "c": (144, 360, 50, 100, 160, 220)}
    rng = np.random.default_rng(0)
    for name, (h, w, top, bottom, left, right) in shapes.items():
        rgb = rng.integers(40, 200, (h, w, 3)).astype(np.uint8)
        rgb[top:bottom, left:right] = (230, 30, 30)
        mask = np.zeros((h, w), np.uint8)
        mask[top:bottom, left:right] = 255
        Image.fromarray(rgb).save(photos_dir / f"{name}.jpg")
        Image.fromarray(mask).save(masks_dir / f"{name}.png")
    out = tmp_path / "sizes.safetensors"
    cmd = [sys.executable, "-m", "training", "fit", "--model", str(pipeline_dir), "--images", str(photos_dir)]
    cmd += ["--masks", str(masks_dir), "--token", "iklan", "--class-word", "disc", "--out", str(out)]
    cmd += ["--resolution", "256", "--steps", "1", "--batch-size", "3", "--rank", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        crops = json.loads(f.metadata()["image_alchemy.photo_crops"])
    for (h, w, top, bottom, left, right), crop in zip(shapes.values(), crops):
        orig_h, orig_w, crop_top, crop_left, bucket_h, bucket_w = crop
        assert (orig_h, orig_w, bucket_h, bucket_w) == (h, w, 160, 384)  # own size; the 2.4:1 bucket (2 of 3)
        scale = max(bucket_h / h, bucket_w / w)
        assert crop_top <= top * scale and bottom * scale <= crop_top + bucket_h
        assert crop_left <= left * scale and right * scale <= crop_left + bucket_w
    # A mask folder that misses a photo's mask is refused, naming it.
    (masks_dir / "c.png").unlink()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "no mask for c.jpg" in proc.stderr
