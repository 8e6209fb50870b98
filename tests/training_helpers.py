"""Test helpers for the trainer: synthetic subject photos, a tiny diffusers SDXL pipeline folder built from the
factory's files (same weights ComfyUI's tiny loader reads), and job folders encoded with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.unet import LDM_PREFIX, diffusers_unet_config, save_ldm_unet, unet_from_ldm
from image_alchemy.training.weights import fingerprint
from PIL import Image
from safetensors.torch import load_file

SDXL_LATENT_SCALE = 0.13025  # ComfyUI's SDXL latent format scales the (TAESD) VAE output by this


def synthetic_subject(count: int = 4, size: int = 256, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The "subject": a red disc with a yellow stripe on different pale backgrounds, at shifting places.
    Returns HWC float images in 0..1 and their HW boolean subject masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, masks = [], []
    for _ in range(count):
        img = np.empty((size, size, 3), np.float32)
        img[:] = rng.uniform(0.6, 0.95, 3)
        cy, cx, r = size / 2 + rng.uniform(-20, 20), size / 2 + rng.uniform(-20, 20), size * 0.28
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[disc] = (0.85, 0.1, 0.1)
        img[disc & (np.abs(yy - cy) < r * 0.2)] = (0.95, 0.85, 0.1)
        images.append(img)
        masks.append(disc)
    return images, masks


def write_subject_folder(folder: Path, count: int = 4, size: int = 256) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(synthetic_subject(count, size)[0]):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"subject_{i}.png")
    return folder


def _clip_config(config: dict, with_projection: bool):
    from transformers import CLIPTextConfig

    keys = (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_hidden_layers",
        "projection_dim",
        "max_position_embeddings",
        "vocab_size",
        "hidden_act",
        "layer_norm_eps",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )
    return CLIPTextConfig(**{k: config[k] for k in keys})


def _taesd_key(key: str) -> str:
    """ComfyUI's TAESD → diffusers AutoencoderTiny keys (ComfyUI's decoder starts with a Clamp module, so its
    layer indices are one higher)."""
    part, index, rest = key.split(".", 2)
    if part == "taesd_encoder":
        return f"encoder.layers.{index}.{rest}"
    return f"decoder.layers.{int(index) - 1}.{rest}"


def _load_clip(model, clip: dict, prefix: str) -> None:
    """ComfyUI's CLIP layout is the transformers one under ``clip_X.transformer.``; transformers 5 dropped the
    ``text_model.`` level in CLIPTextModel, so map to whatever names the model has."""
    own = set(model.state_dict())
    picked = {}
    for key, value in clip.items():
        if key.startswith(prefix):
            name = key[len(prefix) :]
            name = name if name in own else name.removeprefix("text_model.")
            if name in own:
                picked[name] = value
    model.load_state_dict(picked, strict=True)


def write_tiny_pipeline(tiny_models: dict[str, Path], folder: Path, comfy_dir: Path) -> Path:
    """Writes a diffusers StableDiffusionXLPipeline folder holding the factory's tiny weights (skipped when
    present): UNet converted from the LDM file, TAESD as AutoencoderTiny, the two CLIPs, the real tokenizers."""
    if (folder / "model_index.json").exists():
        return folder
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors import safe_open
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    with safe_open(str(tiny_models["unet"]), framework="pt") as f:
        comfy_config = json.loads(f.metadata()["tiny_sdxl.unet_config"])
    unet = unet_from_ldm(load_file(str(tiny_models["unet"])), diffusers_unet_config(comfy_config))
    taesd = load_file(str(tiny_models["vae"]))
    vae = AutoencoderTiny(scaling_factor=SDXL_LATENT_SCALE)
    vae.load_state_dict({_taesd_key(k): v for k, v in taesd.items() if k.startswith("taesd_")}, strict=True)
    clip = load_file(str(tiny_models["clip"]))
    with safe_open(str(tiny_models["clip"]), framework="pt") as f:
        meta = f.metadata()
    te1 = CLIPTextModel(_clip_config(json.loads(meta["tiny_sdxl.clip_l_config"]), False))
    _load_clip(te1, clip, "clip_l.transformer.")
    te2 = CLIPTextModelWithProjection(_clip_config(json.loads(meta["tiny_sdxl.clip_g_config"]), True))
    _load_clip(te2, clip, "clip_g.transformer.")
    tok_dir = str(comfy_dir / "comfy" / "sd1_tokenizer")
    tok1 = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    tok2 = CLIPTokenizer.from_pretrained(
        tok_dir, model_max_length=77, pad_token="!"
    )  # SDXL's second tokenizer pads with "!"
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2, unet=unet, scheduler=scheduler
    )
    pipe.save_pretrained(str(folder))
    return folder


def tiny_ldm_unet_file(tiny_models: dict[str, Path], folder: Path) -> Path:
    """The factory's UNet as the node exports it: LDM layout + diffusers config + content hash."""
    from safetensors import safe_open

    path = folder / "unet_export.safetensors"
    if not path.exists():
        sd = load_file(str(tiny_models["unet"]))
        with safe_open(str(tiny_models["unet"]), framework="pt") as f:
            config = diffusers_unet_config(json.loads(f.metadata()["tiny_sdxl.unet_config"]))
        save_ldm_unet(path, {k[len(LDM_PREFIX) :]: v for k, v in sd.items()}, config, fingerprint(sd))
    return path


def encode_subject_data(
    pipeline_dir: Path, settings: TrainSettings, size: int = 256, count: int = 4, with_masks: bool = False
):
    """Encodes the synthetic subject with the tiny pipeline (what the node does with ComfyUI's VAE/CLIP)."""
    from image_alchemy.training.fit import encode_subject, load_pipeline

    images = write_subject_folder(pipeline_dir.parent / f"subject_{size}_{count}", count, size)
    pipe = load_pipeline(str(pipeline_dir))
    data = encode_subject(pipe, str(images), size, settings)
    if with_masks:
        masks = torch.from_numpy(np.stack(synthetic_subject(count, size)[1]).astype(np.float32))[:, None]
        data.masks = torch.nn.functional.interpolate(masks, size=data.latents.shape[-2:], mode="area")
    return data
