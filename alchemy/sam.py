"""Segment Anything (segment-anything 1.0): build without weights, load a checkpoint safely, segment boxes.

The released checkpoints (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth) are plain state
dicts. The architecture is read from the tensor shapes; a released size is built with segment-anything's own
builder (``sam_model_registry[...](checkpoint=None)``), anything else (fine-tuned or tiny test models) from the
same components with the inferred sizes. Weights load with ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAM_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class SamSpec:
    """The sizes that make one SAM architecture."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8  # not visible in the shapes; every released model uses 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3


# The three released sizes, as segment_anything.build_sam defines them.
RELEASED = {
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
}


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def infer_spec(state: dict[str, torch.Tensor]) -> SamSpec:
    """Architecture sizes from a SAM state dict (relative-position tables give head size and window layout)."""
    try:
        proj = state["image_encoder.patch_embed.proj.weight"]
        embed_dim, patch = proj.shape[0], proj.shape[2]
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = _count(state, r"image_encoder\.blocks\.(\d+)\.")
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
        global_idx = tuple(i for i, shape in enumerate(rel) if shape[0] == 2 * grid - 1)
        windowed = [shape[0] for i, shape in enumerate(rel) if i not in global_idx]
        return SamSpec(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=embed_dim // rel[0][1],
            global_attn_indexes=global_idx,
            img_size=grid * patch,
            patch_size=patch,
            window_size=(windowed[0] + 1) // 2 if windowed else 14,
            mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
            out_chans=state["image_encoder.neck.0.weight"].shape[0],
            mask_in_chans=state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            decoder_depth=_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
            decoder_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            iou_head_depth=_count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            iou_head_hidden_dim=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
            num_multimask_outputs=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        )
    except (KeyError, IndexError) as e:
        raise ValueError(f"not a Segment Anything checkpoint (missing or odd tensor {e}).") from None


def released_name(spec: SamSpec) -> str | None:
    """'vit_b' / 'vit_l' / 'vit_h' when ``spec`` is one of the released architectures."""
    return next((name for name, known in RELEASED.items() if known == spec), None)


def _sam_module():
    try:
        import segment_anything
    except ImportError as e:
        raise RuntimeError("Segment Anything is not installed: pip install segment-anything") from e
    return segment_anything


def build_sam(spec: SamSpec) -> torch.nn.Module:
    """An untrained SAM of ``spec`` (segment-anything's builder for released sizes, its components otherwise)."""
    sa = _sam_module()
    name = released_name(spec)
    if name is not None:
        return sa.sam_model_registry[name](checkpoint=None)
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = spec.img_size // spec.patch_size
    encoder = ImageEncoderViT(
        depth=spec.depth,
        embed_dim=spec.embed_dim,
        img_size=spec.img_size,
        mlp_ratio=spec.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec.num_heads,
        patch_size=spec.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.out_chans,
    )
    prompt = PromptEncoder(
        embed_dim=spec.out_chans,
        image_embedding_size=(grid, grid),
        input_image_size=(spec.img_size, spec.img_size),
        mask_in_chans=spec.mask_in_chans,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=spec.num_multimask_outputs,
        transformer_dim=spec.out_chans,
        transformer=TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.out_chans,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_heads,
        ),
        iou_head_depth=spec.iou_head_depth,
        iou_head_hidden_dim=spec.iou_head_hidden_dim,
    )
    return Sam(
        image_encoder=encoder,
        prompt_encoder=prompt,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path.name}: expected a state dict of tensors.")
    return state


# Segment Anything derivatives whose files sit in the same folder but whose architecture segment-anything 1.0 cannot
# build: SAM-HQ adds an HQ output token and a decoder branch fed by the ViT's intermediate features
# (mask_decoder.hf_token, hf_mlp, compress_vit_feat, embedding_encoder, embedding_maskfeature; its vit_tiny also uses
# TinyViT); MobileSAM replaces the ViT image encoder by TinyViT (image_encoder.layers.*, patch_embed.seq.*).
UNSUPPORTED = {
    "SAM-HQ": (
        r"^mask_decoder\.(hf_token|hf_mlp|compress_vit_feat|embedding_encoder|embedding_maskfeature)\.",
        re.compile(r"sam_hq|samhq|hq_sam", re.I),
    ),
    "MobileSAM / TinyViT": (
        r"^image_encoder\.(layers\.\d+\.|patch_embed\.seq\.)",
        re.compile(r"mobile_?sam|tinyvit|tiny_vit|vit_tiny", re.I),
    ),
}
SUPPORTED_FILES = (
    "the original Segment Anything checkpoints sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
    "sam_vit_h_4b8939.pth (or fine-tunes of that ViT architecture)"
)


class UnsupportedSam(ValueError):
    """A SAM-HQ or MobileSAM checkpoint: a valid file of an architecture not built here."""


def unsupported_kind(state: dict[str, torch.Tensor]) -> str | None:
    """'SAM-HQ' or 'MobileSAM / TinyViT' when the state dict is one of those, else None."""
    for kind, (keys, _) in UNSUPPORTED.items():
        if any(re.match(keys, k) for k in state):
            return kind
    return None


def unsupported_by_name(filename: str) -> str | None:
    """The same, from a file name (for the loader's list, which cannot open every file)."""
    return next((kind for kind, (_, name) in UNSUPPORTED.items() if name.search(filename)), None)


def unsupported_message(name: str, kind: str) -> str:
    return (
        f"'{name}' is a {kind} checkpoint, which this pack does not load (segment-anything's classes cannot "
        f"build that architecture). Use {SUPPORTED_FILES}."
    )


def load_sam(path: str | Path) -> torch.nn.Module:
    """SAM from a checkpoint file, on the CPU in eval mode; ``.spec`` and ``.variant`` describe what was built."""
    state = read_state_dict(path)
    kind = unsupported_kind(state)
    if kind is not None:
        raise UnsupportedSam(unsupported_message(Path(path).name, kind))
    spec = infer_spec(state)
    model = build_sam(spec)
    model.load_state_dict(state, strict=True)
    model.spec, model.variant = spec, released_name(spec) or "custom"
    return model.eval()


@torch.no_grad()
def segment_boxes(sam: torch.nn.Module, image: np.ndarray, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimask SAM masks for every box of one H×W×3 uint8 RGB image.

    The image embedding is computed once (``set_image``), then all boxes are decoded in one batch.
    Returns masks (N×K×H×W bool, K = 3 hypotheses) and SAM's predicted IoUs (N×K).
    """
    from segment_anything import SamPredictor

    height, width = image.shape[:2]
    if len(boxes) == 0:
        return torch.zeros(0, 3, height, width, dtype=torch.bool), torch.zeros(0, 3)
    predictor = SamPredictor(sam)
    predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
    device = predictor.device
    transformed = predictor.transform.apply_boxes_torch(boxes.to(device, torch.float32), (height, width))
    masks, iou, _ = predictor.predict_torch(
        point_coords=None, point_labels=None, boxes=transformed, multimask_output=True
    )
    predictor.reset_image()
    return masks.cpu(), iou.float().cpu()
