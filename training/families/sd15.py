"""Stable Diffusion 1.x (and its finetunes): 512², one CLIP-L text encoder (77×768), no pooled text or size
conditioning; ε prediction (v-prediction finetunes through ComfyUI's ModelSamplingDiscrete)."""

from __future__ import annotations

import torch

from .base import MemoryFigures
from .unet import UNetFamily


class SD15(UNetFamily):
    name = "sd15"
    title = "SD1.5"
    comfy_configs = ("SD15",)
    native_resolution = 512
    # kohya's SD1.5 bucket set at 512² (64-pixel steps, area ≤ 512²): the common photo aspects.
    buckets = ((512, 512), (576, 448), (448, 576), (640, 384), (384, 640), (704, 320), (320, 704))
    conditioning = ("prompt_embeds",)
    base_model_version = "sd_v1"
    modelspec_architecture = "stable-diffusion-v1/lora"
    # 859.5 M UNet parameters. Activations at 512², batch 1, bf16: SDXL's figures scaled by the ratio of the
    # tensors both full-size UNets save for the backward on the meta device (attention weights left out, as
    # flash/memory-efficient SDPA keeps none): 0.227 of SDXL-at-1024²'s without checkpointing, 0.47 with.
    memory = MemoryFigures(params=8.595e8, activations_gib=(1.66, 0.23))
    diffusers_pipeline = "StableDiffusionPipeline"
    checkpoint_keys = ("cond_stage_model.transformer.",)

    def pipeline_kwargs(self) -> dict:
        return {"safety_checker": None, "requires_safety_checker": False}  # not a trainer's concern; offline

    def encode_prompt(self, pipe, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(
                prompt, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        return {"prompt_embeds": embeds.float().cpu()}
