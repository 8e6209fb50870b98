"""Crop a context box around a mask, scale it to the model's resolution, and stitch the result back.

Images are single H×W×C tensors (ComfyUI's IMAGE layout without the batch), masks H×W, values 0..1. Stitching
blends with the (grown, feathered) mask and copies the base image (the scene) wherever that mask is 0, so those
pixels stay bit-identical to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masks import BINARY_THRESHOLD, mask_bbox


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    bottom: int  # exclusive
    right: int  # exclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def context_box(mask: torch.Tensor, context: float, whole_image: bool = False) -> Box | None:
    """The mask's bounding box (every pixel > 0) grown by ``context`` × its longer side on every side, clipped
    to the image. None for an empty mask. ``whole_image`` returns the full frame (still None when empty)."""
    if context < 0:
        raise ValueError(f"context must be ≥ 0, got {context}")
    h, w = mask.shape
    box = mask_bbox(mask)
    if box is None:
        return None
    if whole_image:
        return Box(0, 0, h, w)
    top, left, bottom, right = box
    pad = int(math.ceil(context * max(bottom - top, right - left)))
    return Box(max(0, top - pad), max(0, left - pad), min(h, bottom + pad), min(w, right + pad))


def model_size(height: int, width: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """Size to sample a height×width crop at: area ``resolution``² with the crop's aspect ratio (0 keeps its size),
    each side rounded to a multiple of ``multiple`` (the VAE's downscale) and at least one multiple."""
    if resolution < 0:
        raise ValueError(f"resolution must be ≥ 0, got {resolution}")
    scale = 1.0 if resolution == 0 else resolution / math.sqrt(height * width)
    return (
        max(multiple, int(round(height * scale / multiple)) * multiple),
        max(multiple, int(round(width * scale / multiple)) * multiple),
    )


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of an H×W×C image (antialiased when shrinking), clamped to 0..1."""
    if tuple(image.shape[:2]) == (height, width):
        return image
    shrinking = height < image.shape[0] or width < image.shape[1]
    # F.interpolate wants channels first: H×W×C → 1×C×H×W and back.
    out = F.interpolate(
        image.movedim(-1, 0)[None].float(),
        size=(height, width),
        mode="bicubic",
        align_corners=False,
        antialias=shrinking,
    )
    return out[0].movedim(0, -1).clamp_(0.0, 1.0).to(image.dtype)


def crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    return image[box.top : box.bottom, box.left : box.right]


def stitch(image: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor, box: Box) -> torch.Tensor:
    """Blends ``generated`` (the box's content, any size: resized to the box) into a copy of ``image`` with
    ``mask`` (full-image H×W). Where the mask is 0 the input pixel is copied, not recomputed."""
    generated = resize_image(generated.to(image.device, image.dtype), box.height, box.width)
    out = image.clone()
    region = crop(image, box)
    weight = crop(mask, box).to(image.device, image.dtype)[..., None]
    channels = min(region.shape[-1], generated.shape[-1])
    blended = weight * generated[..., :channels] + (1 - weight) * region[..., :channels]
    out[box.top : box.bottom, box.left : box.right, :channels] = torch.where(
        weight > 0, blended, region[..., :channels]
    )
    return out


def img2img_start(image: torch.Tensor, scene: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the sampler starts from: ``image`` (e.g. blurred) where ``mask`` > 0, the ``scene`` elsewhere, so the
    context the model sees around the repaint region is the scene the result is stitched onto."""
    if image is scene:
        return image
    return torch.where(mask.to(image.device)[..., None] > 0, image, scene.to(image.device, image.dtype))


def leave_out(mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The stitch mask with ``keep`` taken out: ``mask`` × (1 − min(1, ``keep`` / 0.5)). Where ``keep`` ≥ 0.5 (the
    pack's subject threshold, ``masks.BINARY_THRESHOLD``) the weight is 0 and the base image is copied there, bit
    for bit, so a mask read from an 8-bit file (white = 0.996 after a lossy step, 0.5 on its antialiased edge)
    keeps the whole subject; below 0.5 a soft ``keep`` fades the repaint out."""
    kept = (keep.to(mask.device, mask.dtype) / BINARY_THRESHOLD).clamp(0, 1)
    return mask * (1 - kept)
