"""Evaluation backbones (DINO ViT, CLIP) loaded from local folders in transformers' save_pretrained format.

Nothing here downloads: folders are read with ``local_files_only=True`` and a missing file is reported by name.
transformers is imported lazily so the pack loads without it being importable at startup.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DINO_FILES = (("config.json",), WEIGHT_FILES, ("preprocessor_config.json",))
CLIP_FILES = DINO_FILES + (("tokenizer.json", "vocab.json"),)


class BackboneFolderError(FileNotFoundError):
    """A backbone folder is missing or lacks a file; the message names the folder and the files expected."""


def check_folder(folder: str, kind: str, required: Sequence[Sequence[str]], example: str) -> None:
    if not folder or not os.path.isdir(folder):
        raise BackboneFolderError(
            f"{kind} backbone folder not found: {folder!r}. Expected a transformers save_pretrained folder "
            f"(e.g. a local copy of {example}) holding {_describe(required)}."
        )
    missing = [group for group in required if not any(os.path.exists(os.path.join(folder, f)) for f in group)]
    if missing:
        raise BackboneFolderError(
            f"{kind} backbone folder {folder!r} lacks {_describe(missing)}. Copy the whole model folder "
            f"(e.g. {example}: config.json, weights, preprocessor_config.json and, for CLIP, the tokenizer files)."
        )


def _describe(groups: Sequence[Sequence[str]]) -> str:
    return ", ".join(" or ".join(group) for group in groups)


def _model_type(folder: str) -> str:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return json.load(f).get("model_type", "")


def _batches(images: Sequence[np.ndarray], size: int):
    for start in range(0, len(images), size):
        yield images[start : start + size]


def _pooled(out) -> torch.Tensor:
    # transformers 4 returns the projected features as a tensor, transformers 5 as the output's pooler_output.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _ImageEmbedder:
    """``embed_images`` over a backbone's ``_features(pixel_values)``."""

    @torch.inference_mode()
    def embed_images(
        self, images: Sequence[np.ndarray], device: torch.device | str = "cpu", batch_size: int = 16
    ) -> torch.Tensor:
        """``images``: HWC uint8 RGB arrays of any sizes (the folder's processor resizes) → N×D float32 on CPU."""
        return _embed(self.model, self.processor, images, device, batch_size, self._features)


class DinoBackbone(_ImageEmbedder):
    """DINO ViT image embeddings: the CLS token of the last (layer-normed) hidden state, as DreamBooth's DINO
    metric uses with ViT-S/16 (``facebook/dino-vits16``)."""

    def __init__(self, model, processor, name: str):
        self.model, self.processor, self.name = model.eval(), processor, name

    @classmethod
    def load(cls, folder: str) -> DinoBackbone:
        check_folder(folder, "DINO", DINO_FILES, "facebook/dino-vits16")
        from transformers import AutoImageProcessor, AutoModel, ViTModel

        model_type = _model_type(folder)
        if model_type == "vit":
            # The pooler is not part of DINO (its checkpoint has none); without it no weights are left random.
            model = ViTModel.from_pretrained(folder, add_pooling_layer=False, local_files_only=True)
        else:
            log.warning(
                "DINO folder %s holds model_type %r, not 'vit': using its CLS token all the same "
                "(numbers are not comparable with DreamBooth's ViT-S/16).",
                folder,
                model_type,
            )
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        return cls(model, processor, os.path.basename(os.path.normpath(folder)))

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]


def _embed(model, processor, images, device, batch_size: int, features) -> torch.Tensor:
    """Runs ``features(pixel_values)`` over the images in batches (processor-resized) → N×D float32 on CPU."""
    model.to(device)
    out = []
    for chunk in _batches(images, batch_size):
        pixels = processor(images=list(chunk), return_tensors="pt")["pixel_values"].to(device, model.dtype)
        out.append(features(pixels).float().cpu())
    return torch.cat(out)


class ClipBackbone(_ImageEmbedder):
    """CLIP image and text embeddings (projected features), for CLIP-I and CLIP-T."""

    def __init__(self, model, processor, tokenizer, name: str):
        self.model, self.processor, self.tokenizer, self.name = model.eval(), processor, tokenizer, name

    @classmethod
    def load(cls, folder: str) -> ClipBackbone:
        check_folder(folder, "CLIP", CLIP_FILES, "openai/clip-vit-large-patch14")
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, processor, tokenizer, os.path.basename(os.path.normpath(folder)))

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    @torch.inference_mode()
    def embed_texts(
        self, texts: Sequence[str], device: torch.device | str = "cpu", batch_size: int = 64
    ) -> torch.Tensor:
        self.model.to(device)
        max_length = self.model.config.text_config.max_position_embeddings
        out = []
        for chunk in _batches(list(texts), batch_size):
            tokens = self.tokenizer(
                list(chunk), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            out.append(_pooled(self.model.get_text_features(**tokens)).float().cpu())
        return torch.cat(out)


def release(*backbones) -> None:
    """Moves models back to the CPU (the caller drops its references afterwards)."""
    for backbone in backbones:
        if backbone is not None:
            backbone.model.to("cpu")
