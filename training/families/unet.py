"""The UNet families (SD1.5, SDXL): ComfyUI's LDM UNet converted by diffusers' own single-file converter into a
``UNet2DConditionModel`` (training/unet.py), ε or v prediction on the scaled-linear 1000-step schedule."""

from __future__ import annotations

import torch

from .base import ModelFamily


class UNetFamily(ModelFamily):
    bucket_multiple = 32  # the VAE's 8 × the UNet halving the latent twice
    latent_channels = 4
    predictions = ("epsilon", "v_prediction")
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    lora_target_description = "attention (to_q, to_k, to_v, to_out.0)"

    def denoiser_config(self, comfy_unet_config: dict) -> dict:
        from ..unet import diffusers_unet_config

        return diffusers_unet_config(comfy_unet_config)

    def denoiser_from_state_dict(self, state_dict, config, dtype=torch.float32):
        from ..unet import unet_from_ldm

        return unet_from_ldm(state_dict, config, dtype)

    def added_cond_kwargs(self, cond: dict[str, torch.Tensor]) -> dict | None:
        return None

    def predict(self, denoiser, noisy, timesteps, cond):
        extra = self.added_cond_kwargs(cond)
        kwargs = {} if extra is None else {"added_cond_kwargs": extra}
        return denoiser(noisy, timesteps, cond["prompt_embeds"], return_dict=False, **kwargs)[0]
