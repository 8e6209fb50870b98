"""What a model family declares: everything the trainer, the node and `fit` need to know about one architecture
(docs/DESIGN.md §5.7). One subclass per family, one instance of it in ``training/families/__init__.py``.

The trainer drives the family's diffusers model, converted from the weights ComfyUI loaded (docs/DESIGN.md §5.8).
Nothing here imports ComfyUI: the node recognises a MODEL by the names of its ComfyUI model-config classes
(``comfy.supported_models``), which the family lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryFigures:
    """The full-size denoiser's figures behind ``gradient_checkpointing`` auto (training/hardware.py)."""

    params: float  # parameters of the denoiser
    activations_gib: tuple[float, float]  # saved for the backward at the native size, batch 1: (off, on)


class ModelFamily:
    """One architecture family. Class attributes are the declaration; methods the family-specific code."""

    name: str  # the ``model_family`` setting's value, e.g. "sdxl"
    title: str  # for messages, e.g. "SDXL"
    comfy_configs: tuple[str, ...]  # ComfyUI model-config class names that are this family (their subclasses too)
    native_resolution: int  # the side of the square the family was trained at
    buckets: tuple[tuple[int, int], ...]  # (width, height) aspect buckets at the native resolution
    bucket_multiple: int  # every bucket side divides by this (latent downsampling × the denoiser's own)
    latent_channels: int
    conditioning: tuple[str, ...]  # tensors the node encodes per prompt/photo (TrainingData names); first: the text
    predictions: tuple[str, ...]  # the parametrisations its models come in (``prediction_type`` values)
    lora_targets: tuple[str, ...]  # module-name suffixes the LoRA wraps (attention projections, paper 001 §3.2)
    lora_target_description: str  # for the file's ss_network_args
    base_model_version: str  # kohya's ss_base_model_version
    modelspec_architecture: str  # Stability's modelspec.architecture of a LoRA on it
    memory: MemoryFigures
    diffusers_pipeline: str  # the diffusers pipeline class `fit` loads a checkpoint with
    checkpoint_keys: tuple[str, ...]  # key prefixes by which a single-file checkpoint is told to be this family

    def recognises(self, config_class_names: list[str]) -> bool:
        """``config_class_names``: the MRO names of a MODEL's ``model_config`` (ComfyUI's supported_models)."""
        return any(name in self.comfy_configs for name in config_class_names)

    # ---- the denoiser --------------------------------------------------------------------------------------
    def denoiser_config(self, comfy_unet_config: dict) -> dict:
        """The diffusers config of the denoiser whose ComfyUI ``unet_config`` is given."""
        raise NotImplementedError

    def denoiser_from_state_dict(self, state_dict: dict[str, torch.Tensor], config: dict, dtype: torch.dtype):
        """The diffusers denoiser holding ``state_dict`` (ComfyUI's layout), built without a second copy."""
        raise NotImplementedError

    def predict(self, denoiser, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor]):
        """The denoiser's output for ``noisy`` latents (N×C×h×w) with ``cond`` (this family's ``conditioning``)."""
        raise NotImplementedError

    # ---- conditioning --------------------------------------------------------------------------------------
    def text_conditioning(self, cond: torch.Tensor, pooled: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What ComfyUI's CLIP ``encode_from_tokens(…, return_pooled=True)`` gave, under this family's names."""
        return {self.conditioning[0]: cond.float().cpu()}

    def size_conditioning(self, crops) -> dict[str, torch.Tensor]:
        """Per-image conditioning on the crop (training/preprocess.py ``Crop``): none for most families."""
        return {}

    def square_size_conditioning(self, height: int, width: int, rows: int) -> dict[str, torch.Tensor]:
        """The size conditioning of ``rows`` uncropped images of height × width (class images, previews)."""
        return {}

    def pipeline_kwargs(self) -> dict:
        """Extra arguments `fit` loads the diffusers pipeline with."""
        return {}

    def encode_prompt(self, pipe, prompt: str) -> dict[str, torch.Tensor]:
        """`fit`: ``prompt`` encoded by the diffusers pipeline's text encoders, under this family's names."""
        raise NotImplementedError

    # ---- the LoRA file ----------------------------------------------------------------------------------------
    def lora_metadata(self) -> dict[str, str]:
        return {
            "ss_base_model_version": self.base_model_version,
            "ss_network_args": json.dumps({"target_modules": self.lora_target_description}),
            "modelspec.architecture": self.modelspec_architecture,
            "image_alchemy.model_family": self.name,
        }
