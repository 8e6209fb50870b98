"""SDXL base 1.0 and its finetunes (Pony, Illustrious, NoobAI v-pred: what ``model_sampling`` says decides ε or
v with zero terminal SNR): 1024², CLIP-L + CLIP-G (77×2048), the pooled CLIP-G text and the size/crop
conditioning (time ids) as added conditioning."""

from __future__ import annotations

import torch

from .base import MemoryFigures
from .unet import UNetFamily


class SDXL(UNetFamily):
    name = "sdxl"
    title = "SDXL"
    comfy_configs = ("SDXL",)
    native_resolution = 1024
    # SDXL's standard buckets at 1024² (width, height), from its training.
    buckets = (
        (1024, 1024),
        (1152, 896),
        (896, 1152),
        (1216, 832),
        (832, 1216),
        (1344, 768),
        (768, 1344),
        (1536, 640),
        (640, 1536),
    )
    conditioning = ("prompt_embeds", "pooled_prompt_embeds", "time_ids")
    base_model_version = "sdxl_base_v1-0"
    modelspec_architecture = "stable-diffusion-xl-v1-base/lora"
    # 2.567 G UNet parameters; activations at 1024², batch 1, mixed precision (estimated on the full-size model).
    memory = MemoryFigures(params=2.567e9, activations_gib=(7.3, 0.5))
    diffusers_pipeline = "StableDiffusionXLPipeline"
    checkpoint_keys = ("conditioner.embedders.1.",)

    def added_cond_kwargs(self, cond):
        return {"text_embeds": cond["pooled_prompt_embeds"], "time_ids": cond["time_ids"]}

    def text_conditioning(self, cond, pooled):
        return {"prompt_embeds": cond.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}

    def size_conditioning(self, crops):
        """Original size, crop top-left (in resized pixels), target size: as SDXL was trained."""
        return {"time_ids": torch.tensor([crop.time_ids() for crop in crops], dtype=torch.float32)}

    def square_size_conditioning(self, height, width, rows):
        return {"time_ids": torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).expand(rows, -1)}

    def encode_prompt(self, pipe, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        return {"prompt_embeds": embeds.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}
