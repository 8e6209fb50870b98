"""Evaluation cost: our metrics.evaluate (every image embedded once, batched) vs the per-pair loop many DreamBooth
metric scripts use (embed both images of every generated×real pair), on random-init backbones of the real sizes:
DINO ViT-S/16 (22 M params, 224 px) and CLIP ViT-B/32 (151 M). Also BRISQUE time per 512² image.

Prints ``name: value`` lines (ratios: reference time / our time, same process, same input; and the largest score
difference between the two paths, which must be ~0). No weights are downloaded: configs only.
Run: .venv/bin/python bench/evaluation.py [--generated 8] [--references 4] [--size 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def load_pack():
    """The pack imported as a package (the repo root never goes on sys.path)."""
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import import_pack

    import_pack()
    from image_alchemy.alchemy import backbones, metrics, quality

    return backbones, metrics, quality


def write_real_size_backbones(root: Path) -> tuple[Path, Path]:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(0)
    dino = root / "dino-vits16"
    # facebook/dino-vits16's config: ViT-S/16.
    ViTModel(
        ViTConfig(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
            image_size=224,
            patch_size=16,
        ),
        add_pooling_layer=False,
    ).save_pretrained(dino)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(dino)
    clip = root / "clip-vit-base-patch32"
    CLIPModel(CLIPConfig(projection_dim=512)).save_pretrained(clip)  # the defaults are ViT-B/32
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(clip)
    CLIPTokenizer.from_pretrained(ROOT / ".cache" / "comfyui" / "comfy" / "sd1_tokenizer").save_pretrained(clip)
    return dino, clip


def per_pair(metrics, dino, clip, generated, prompts, references):
    """The reference path: both images of every pair embedded again, one forward each."""
    out = []
    for image, prompt in zip(generated, prompts):
        d = [float(metrics.cosine_matrix(dino.embed_images([image]), dino.embed_images([r]))) for r in references]
        c = [float(metrics.cosine_matrix(clip.embed_images([image]), clip.embed_images([r]))) for r in references]
        t = float(metrics.text_image_similarity(clip.embed_images([image]), clip.embed_texts([prompt])))
        out.append((np.mean(d), np.mean(c), t))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generated", type=int, default=8)
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    backbones, metrics, quality = load_pack()
    rng = np.random.default_rng(0)
    images = [
        (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8) for _ in range(args.generated + args.references)
    ]
    generated, references = images[: args.generated], images[args.generated :]
    prompts = ["a photo of sks dog"] * args.generated
    with tempfile.TemporaryDirectory() as tmp:
        dino_dir, clip_dir = write_real_size_backbones(Path(tmp))
        dino, clip = backbones.DinoBackbone.load(str(dino_dir)), backbones.ClipBackbone.load(str(clip_dir))
        start = time.perf_counter()
        ours = metrics.evaluate(generated, prompts, references, dino=dino, clip=clip)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        ref = per_pair(metrics, dino, clip, generated, prompts, references)
        ref_s = time.perf_counter() - start
    got = np.array([(s.dino, s.clip_i, s.clip_t) for s in ours.images])
    start = time.perf_counter()
    quality.brisque_scores(generated[:2])
    brisque_s = (time.perf_counter() - start) / 2
    print(f"evaluate_seconds_cpu: {ours_s:.2f}")
    print(f"per_pair_over_evaluate: {ref_s / ours_s:.2f}")
    print(f"max_score_difference: {np.abs(got - ref).max():.2e}")
    print(f"brisque_seconds_per_{args.size}px_image: {brisque_s:.3f}")


if __name__ == "__main__":
    main()
