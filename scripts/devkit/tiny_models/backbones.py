"""Tiny random evaluation backbones in the real formats: a DINO-style ViT (ViTModel, patch 16) and a CLIPModel with
the real CLIP BPE tokenizer ComfyUI ships, each saved with save_pretrained (safetensors + configs) — offline.

The synthetic subject photos of tiny_models/subjects.py are not needed here: metric tests use seeded pictures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

COMFY_DIR = Path(os.environ.get("IMAGE_ALCHEMY_COMFYUI", Path(__file__).resolve().parents[3] / ".cache" / "comfyui"))
DINO_NAME, CLIP_NAME = "tiny-dino-vits16", "tiny-clip"


def write_tiny_dino(folder: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    # Same preprocessing recipe as facebook/dino-vits16 (resize, ImageNet mean/std), at 64 px.
    ViTImageProcessor(
        size={"height": 64, "width": 64}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(folder)
    return folder


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(COMFY_DIR / "comfy" / "sd1_tokenizer")
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_backbones(root: Path) -> dict[str, Path]:
    """``root/tiny-dino-vits16`` and ``root/tiny-clip`` (the layout of models/eval_backbones)."""
    root.mkdir(parents=True, exist_ok=True)
    return {"dino": write_tiny_dino(root / DINO_NAME), "clip": write_tiny_clip(root / CLIP_NAME)}


def pictures(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Seeded, structured RGB pictures (smooth blobs on gradients), HWC uint8, each different."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        color, background = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        img = background * (1 - xx[..., None] * rng.uniform(0.2, 0.8)) * (1 - blob[..., None]) + color * blob[..., None]
        img += rng.normal(0, 0.03, img.shape)
        out.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return out
