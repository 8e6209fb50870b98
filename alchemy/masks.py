"""Mask helpers on ComfyUI's MASK layout (B×H×W float in 0..1): grow, feather, resize, bounding box.

Shared by the segmentation, blur and insert nodes. Morphology and distance transforms run in OpenCV on the CPU
(exact disks, O(pixels) whatever the radius); results come back on the input's device and dtype.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import layout

# Soft masks are binarized at this level wherever a shape (edge, distance, box) is needed.
BINARY_THRESHOLD = 0.5


def _check_bhw(mask: torch.Tensor, name: str) -> None:
    if mask.ndim != 3:
        raise ValueError(f"{name}: expected a B×H×W mask, got shape {tuple(mask.shape)}")


def _per_image(mask: torch.Tensor, fn) -> torch.Tensor:
    """Applies a numpy H×W float32 → H×W function to every mask of the batch."""
    planes = layout.to_numpy(mask)
    out = np.stack([fn(np.ascontiguousarray(p)) for p in planes]) if len(planes) else planes
    return layout.to_torch(out, like=mask)


def distance_outside(plane: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) from every pixel to the nearest mask pixel (≥ 0.5); 0 inside the mask.

    This is ``cv2.distanceTransform`` of the inverted mask: distance to the nearest zero of (1 − mask).
    An empty mask has no nearest pixel: every distance is +inf.
    """
    inside = plane >= BINARY_THRESHOLD
    if not inside.any():
        return np.full(plane.shape, np.inf, np.float32)
    outside = (~inside).astype(np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grey dilation (``pixels`` > 0) or erosion (< 0) of every mask by a disk of radius ``abs(pixels)``.

    Soft values are kept (the max / min over the disk), so a feathered edge moves outward or inward intact.
    """
    _check_bhw(mask, "grow_mask")
    pixels = int(pixels)
    if pixels == 0:
        return mask.clone()
    r = abs(pixels)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    op = cv2.dilate if pixels > 0 else cv2.erode
    # Border: replicate, so a mask touching the edge does not shrink away from it when eroded.
    return _per_image(mask, lambda p: op(p, disk, borderType=cv2.BORDER_REPLICATE))


def feather_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soft outward edge: 1 on the mask, falling smoothly (smoothstep of the distance) to 0 at ``pixels`` outside.

    The support grows by exactly ``pixels`` and nothing inside the mask is weakened, so the region a
    compositor leaves untouched is known in advance: every pixel with distance ≥ ``pixels`` gets exactly 0.
    Soft input values are kept where they are higher than the ramp.
    """
    _check_bhw(mask, "feather_mask")
    pixels = int(pixels)
    if pixels < 0:
        raise ValueError(f"feather_mask: pixels must be ≥ 0, got {pixels}")
    if pixels == 0:
        return mask.clone()

    def feather(plane: np.ndarray) -> np.ndarray:
        dist = distance_outside(plane)
        t = np.clip(1.0 - dist / pixels, 0.0, 1.0)
        ramp = t * t * (3.0 - 2.0 * t)
        return np.maximum(plane, ramp.astype(np.float32))

    return _per_image(mask, feather)


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of every mask to ``height``×``width`` (antialiased when shrinking), clamped to 0..1."""
    _check_bhw(mask, "resize_mask")
    if tuple(mask.shape[1:]) == (height, width):
        return mask
    if height < 1 or width < 1:
        raise ValueError(f"resize_mask: target size must be positive, got {height}×{width}")
    shrinking = height < mask.shape[1] or width < mask.shape[2]
    out = F.interpolate(
        mask[:, None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return out[:, 0].clamp_(0.0, 1.0).to(mask.dtype)


def mask_bbox(plane: torch.Tensor, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), bottom/right exclusive, of the pixels above ``threshold`` in one H×W mask;
    None when there are none."""
    if plane.ndim != 2:
        raise ValueError(f"mask_bbox: expected an H×W mask, got shape {tuple(plane.shape)}")
    rows = torch.nonzero((plane > threshold).any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero((plane > threshold).any(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def match_batch(mask: torch.Tensor, batch: int, node: str) -> torch.Tensor:
    """Broadcasts a single mask to ``batch`` images; any other mismatch is the user's to fix."""
    if mask.shape[0] == batch:
        return mask
    if mask.shape[0] == 1:
        return mask.expand(batch, -1, -1)
    raise ValueError(
        f"{node}: the mask batch has {mask.shape[0]} masks but the image batch has {batch} images. "
        "Give one mask per image, or a single mask for all of them. A batch with one mask per "
        "subject or object (Grounded SAM Mask's phrase_masks, SAM3_Detect with individual_masks on) "
        "goes through Mask From Batch first, which picks one by its index."
    )
