"""Fixtures for the tiny models (one each, written once per session) and the inputs tests build from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, comfy_dir) -> dict[str, Path]:
    from tiny_models import factory

    factory.use_comfyui(comfy_dir)
    folder = tmp_path_factory.mktemp("tiny_sdxl")
    return {**factory.write_tiny_sdxl(folder), **factory.write_tiny_sd15(folder)}


@pytest.fixture(scope="session")
def pipeline_dir(tiny_models, comfy_dir, tmp_path_factory) -> Path:
    """The tiny model as a diffusers SDXL pipeline folder (the trainer's `fit` input), written once per session."""
    from tiny_models.pipeline import write_tiny_pipeline

    return write_tiny_pipeline(tiny_models, tmp_path_factory.mktemp("tiny_pipe") / "pipe", comfy_dir)


@pytest.fixture(scope="session")
def sd15_pipeline_dir(tiny_models, comfy_dir, tmp_path_factory) -> Path:
    """The tiny SD1.5 as a diffusers StableDiffusionPipeline folder (`fit`'s --config for its single file)."""
    from tiny_models.pipeline import write_tiny_sd15_pipeline

    return write_tiny_sd15_pipeline(tiny_models, tmp_path_factory.mktemp("tiny_sd15_pipe") / "pipe", comfy_dir)


@pytest.fixture(scope="session")
def sd15_checkpoint(tiny_models, tmp_path_factory) -> Path:
    """The tiny SD1.5 as a single-file checkpoint (UNet + text encoder in the LDM layout)."""
    from tiny_models.pipeline import write_tiny_sd15_checkpoint

    return write_tiny_sd15_checkpoint(tiny_models, tmp_path_factory.mktemp("tiny_sd15") / "tiny_sd15.safetensors")


@pytest.fixture(scope="session")
def unet_file(tiny_models, tmp_path_factory) -> Path:
    """The tiny UNet exported the way the node hands it to the trainer, written once per session."""
    from tiny_models.pipeline import tiny_ldm_unet_file

    return tiny_ldm_unet_file(tiny_models, tmp_path_factory.mktemp("unet_export"))


@pytest.fixture(scope="session")
def tiny_grounding_dino(tmp_path_factory) -> dict[str, Path]:
    """The tiny GroundingDINO in both layouts: the transformers folder ("hf") and the original .pth ("pth")."""
    from tiny_models import detectors

    root = tmp_path_factory.mktemp("tiny_gdino")
    hf = detectors.write_grounding_dino_hf(root / "grounding-dino-tiny-test")
    return {"hf": hf, "pth": detectors.write_grounding_dino_original(root, hf)}


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory) -> Path:
    """The tiny SAM checkpoint (original segment_anything layout)."""
    from tiny_models import detectors

    return detectors.write_sam(tmp_path_factory.mktemp("tiny_sam") / "sam_tiny_test.pth")


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    """The tiny evaluation backbones: the DINO ViT ("dino") and the CLIPModel ("clip") folders."""
    from tiny_models.backbones import write_tiny_backbones

    return write_tiny_backbones(tmp_path_factory.mktemp("tiny_backbones") / "eval_backbones")


@pytest.fixture(scope="module")
def subject_inputs(comfy):
    """Four synthetic subject photos in the server's input folder (the mask rides in the alpha channel)."""
    from tiny_models.subjects import synthetic_subject

    images, masks = synthetic_subject(4, 256)
    names = []
    for i, (img, mask) in enumerate(zip(images, masks)):
        rgba = np.dstack([img, 1.0 - mask.astype(np.float32)])  # LoadImage's MASK = 1 − alpha
        name = f"ia_subject_{i}.png"
        Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(comfy.base_dir / "input" / name)
        names.append(name)
    return names
