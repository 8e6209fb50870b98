"""The tiny SDXL model on the diffusers side: the parts of a StableDiffusionXLPipeline built from the factory's
files (the same weights ComfyUI's tiny loader reads), the pipeline folder and the UNet file the training node
exports (the trainer's inputs). The pack's training modules are imported where used (toy_world imports this
module without the pack loaded as ``image_alchemy``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file

if TYPE_CHECKING:
    from image_alchemy.training.settings import TrainSettings

SDXL_LATENT_SCALE = 0.13025  # ComfyUI's SDXL latent format scales the (TAESD) VAE output by this
SD15_LATENT_SCALE = 0.18215  # and its SD1.5 latent format by this


def clip_config(config: dict):
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


def taesd_key(key: str) -> str:
    """ComfyUI's TAESD → diffusers AutoencoderTiny keys (ComfyUI's decoder starts with a Clamp module, so its
    layer indices are one higher)."""
    part, index, rest = key.split(".", 2)
    if part == "taesd_encoder":
        return f"encoder.layers.{index}.{rest}"
    return f"decoder.layers.{int(index) - 1}.{rest}"


def load_clip(model, clip: dict, prefix: str) -> None:
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


def text_encoders(clip: dict, clip_l_config: dict, clip_g_config: dict):
    """SDXL's two transformers text encoders from ComfyUI's CLIP state dict."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    te1 = CLIPTextModel(clip_config(clip_l_config))
    load_clip(te1, clip, "clip_l.transformer.")
    te2 = CLIPTextModelWithProjection(clip_config(clip_g_config))
    load_clip(te2, clip, "clip_g.transformer.")
    return te1, te2


def tokenizers(comfy_dir):
    """The real CLIP BPE tokenizer ComfyUI ships, twice (SDXL's second tokenizer pads with "!")."""
    from transformers import CLIPTokenizer

    tok_dir = str(Path(comfy_dir) / "comfy" / "sd1_tokenizer")
    return (
        CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77),
        CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77, pad_token="!"),
    )


def scheduler():
    """SDXL's training scheduler."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def write_tiny_pipeline(tiny_models: dict[str, Path], folder: Path, comfy_dir: Path) -> Path:
    """Writes a diffusers StableDiffusionXLPipeline folder holding the factory's tiny weights (skipped when
    present): UNet converted from the LDM file, TAESD as AutoencoderTiny, the two CLIPs, the real tokenizers."""
    if (folder / "model_index.json").exists():
        return folder
    from diffusers import AutoencoderTiny, StableDiffusionXLPipeline
    from image_alchemy.training.unet import diffusers_unet_config, unet_from_ldm
    from safetensors import safe_open

    with safe_open(str(tiny_models["unet"]), framework="pt") as f:
        comfy_config = json.loads(f.metadata()["tiny_sdxl.unet_config"])
    unet = unet_from_ldm(load_file(str(tiny_models["unet"])), diffusers_unet_config(comfy_config))
    taesd = load_file(str(tiny_models["vae"]))
    vae = AutoencoderTiny(scaling_factor=SDXL_LATENT_SCALE)
    vae.load_state_dict({taesd_key(k): v for k, v in taesd.items() if k.startswith("taesd_")}, strict=True)
    with safe_open(str(tiny_models["clip"]), framework="pt") as f:
        meta = f.metadata()
    te1, te2 = text_encoders(
        load_file(str(tiny_models["clip"])),
        json.loads(meta["tiny_sdxl.clip_l_config"]),
        json.loads(meta["tiny_sdxl.clip_g_config"]),
    )
    tok1, tok2 = tokenizers(comfy_dir)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok1,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=scheduler(),
    )
    pipe.save_pretrained(str(folder))
    return folder


def _tiny_vae(tiny_models: dict[str, Path], scale: float):
    from diffusers import AutoencoderTiny

    taesd = load_file(str(tiny_models["vae"]))
    vae = AutoencoderTiny(scaling_factor=scale)
    vae.load_state_dict({taesd_key(k): v for k, v in taesd.items() if k.startswith("taesd_")}, strict=True)
    return vae


def write_tiny_sd15_pipeline(tiny_models: dict[str, Path], folder: Path, comfy_dir: Path) -> Path:
    """Writes a diffusers StableDiffusionPipeline folder of the tiny SD1.5 (skipped when present): the UNet
    converted from the LDM file, TAESD as AutoencoderTiny, CLIP-L, the real SD1 tokenizer, no safety checker."""
    if (folder / "model_index.json").exists():
        return folder
    from diffusers import StableDiffusionPipeline
    from image_alchemy.training.unet import diffusers_unet_config, unet_from_ldm
    from safetensors import safe_open
    from transformers import CLIPTextModel

    with safe_open(str(tiny_models["sd15_unet"]), framework="pt") as f:
        comfy_config = json.loads(f.metadata()["tiny_sd15.unet_config"])
    unet = unet_from_ldm(load_file(str(tiny_models["sd15_unet"])), diffusers_unet_config(comfy_config))
    with safe_open(str(tiny_models["sd15_clip"]), framework="pt") as f:
        clip_config_json = json.loads(f.metadata()["tiny_sd15.clip_l_config"])
    text_encoder = CLIPTextModel(clip_config(clip_config_json))
    load_clip(text_encoder, load_file(str(tiny_models["sd15_clip"])), "clip_l.transformer.")
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(tiny_models, SD15_LATENT_SCALE),
        text_encoder=text_encoder,
        tokenizer=tokenizers(comfy_dir)[0],
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return folder


def write_tiny_sd15_checkpoint(tiny_models: dict[str, Path], path: Path) -> Path:
    """The tiny SD1.5 as one single-file checkpoint, in the layout users download (``model.diffusion_model.*``,
    ``cond_stage_model.transformer.text_model.*``); its VAE stays in the pipeline folder `fit` is given as
    ``--config`` (TAESD has no place in an LDM checkpoint)."""
    from safetensors.torch import save_file

    if path.exists():
        return path
    tensors = dict(load_file(str(tiny_models["sd15_unet"])))
    for key, value in load_file(str(tiny_models["sd15_clip"])).items():
        name = key.removeprefix("clip_l.transformer.")
        name = name if name.startswith("text_model.") else "text_model." + name
        tensors["cond_stage_model.transformer." + name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path


def tiny_ldm_unet_file(tiny_models: dict[str, Path], folder: Path) -> Path:
    """The factory's UNet as the node exports it: LDM layout + diffusers config + content hash."""
    from image_alchemy.training.unet import LDM_PREFIX, diffusers_unet_config, save_ldm_unet
    from image_alchemy.training.weights import fingerprint
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

    from .subjects import synthetic_subject, write_subject_folder

    images = write_subject_folder(pipeline_dir.parent / f"subject_{size}_{count}", count, size)
    pipe = load_pipeline(str(pipeline_dir))
    data = encode_subject(pipe, str(images), size, settings)
    if with_masks:
        masks = torch.from_numpy(np.stack(synthetic_subject(count, size)[1]).astype(np.float32))[:, None]
        data.masks = torch.nn.functional.interpolate(masks, size=data.latents.shape[-2:], mode="area")
    return data
