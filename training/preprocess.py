"""Subject photos → training crops: the one resize-and-crop both the node and `python -m training fit` use.

Non-square photos train at the model family's aspect buckets (training/families; SDXL: 1024×1024, 1152×896,
1216×832, 1344×768, 1536×640 and their portrait twins), scaled to the resolution, the bucket nearest the photo's
aspect. The photo is scaled with an antialiased filter (a 3–6 k phone photo shrunk 3–6× with plain bicubic aliases
fine texture into moiré, which an intentionally overfit LoRA then learns) until it covers the bucket, then the
bucket is cut: around the subject's box when a mask is given (a centre cut can lose a subject at the photo's edge),
else centred. SDXL's size and crop conditioning is given in the resized image's pixels, as SDXL was trained and as
diffusers' and kohya's trainers compute it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .families import ModelFamily, family_named

DEFAULT_FAMILY = "sdxl"  # TrainSettings' model_family default

BOX_MARGIN = 0.05  # of the box's size, on each side: the subject's outline is not at the crop's very edge


@dataclass(frozen=True)
class Crop:
    """Where a training crop comes from: original size, resized size, the crop's top-left corner, target size."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    target_height: int
    target_width: int

    def time_ids(self) -> list[int]:
        """SDXL's added conditioning: original size, crop top-left (resized pixels), target size."""
        return [self.height, self.width, self.top, self.left, self.target_height, self.target_width]


def buckets(resolution: int, family: ModelFamily | None = None) -> list[tuple[int, int]]:
    """The family's buckets scaled to ``resolution`` (height, width), sides rounded to multiples of its
    ``bucket_multiple`` (32 for the UNets: the VAE's 8 × the UNet halving the latent twice)."""
    family = family or family_named(DEFAULT_FAMILY)
    scale, multiple = resolution / family.native_resolution, family.bucket_multiple
    out = []
    for w, h in family.buckets:
        size = tuple(max(multiple, int(side * scale / multiple + 0.5) * multiple) for side in (h, w))
        if size not in out:
            out.append(size)
    return out


def nearest_bucket(height: int, width: int, resolution: int, family: ModelFamily | None = None) -> tuple[int, int]:
    """The bucket whose aspect is nearest the photo's (in log aspect: 2:1 and 1:2 are equally far from 1:1)."""
    aspect = math.log(width / height)
    return min(buckets(resolution, family), key=lambda b: abs(math.log(b[1] / b[0]) - aspect))


def mask_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a H×W mask's subject, ends exclusive; None for an empty mask."""
    on = mask > threshold
    if not bool(on.any()):
        return None
    rows, cols = on.any(dim=1).nonzero()[:, 0], on.any(dim=0).nonzero()[:, 0]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _cover_scale(height: int, width: int, target: tuple[int, int]) -> float:
    return max(target[0] / height, target[1] / width)


def box_fits(height: int, width: int, target: tuple[int, int], box) -> bool:
    top, bottom, left, right = _with_margin(box, height, width)
    scale = _cover_scale(height, width, target)
    return (bottom - top) * scale <= target[0] + 1e-6 and (right - left) * scale <= target[1] + 1e-6


def _with_margin(box, height: int, width: int):
    top, bottom, left, right = box
    dy, dx = round((bottom - top) * BOX_MARGIN), round((right - left) * BOX_MARGIN)
    return max(0, top - dy), min(height, bottom + dy), max(0, left - dx), min(width, right + dx)


def choose_bucket(height: int, width: int, resolution: int, boxes=(), family: ModelFamily | None = None):
    """The bucket nearest the photo's aspect in which every subject box fits whole; the nearest one if none does."""
    aspect = math.log(width / height)
    ranked = sorted(buckets(resolution, family), key=lambda b: abs(math.log(b[1] / b[0]) - aspect))
    for bucket in ranked:
        if all(box is None or box_fits(height, width, bucket, box) for box in boxes):
            return bucket
    return ranked[0]


def plan_crop(height: int, width: int, target: tuple[int, int], box=None) -> Crop:
    """Scale to cover ``target`` (height, width), then cut it centred on the subject's box (or the photo)."""
    scale = _cover_scale(height, width, target)
    rh, rw = max(target[0], round(height * scale)), max(target[1], round(width * scale))
    if box is None:
        top, left = (rh - target[0]) // 2, (rw - target[1]) // 2
    else:
        b_top, b_bottom, b_left, b_right = _with_margin(box, height, width)
        top = _place((b_top + b_bottom) / 2 * rh / height, target[0], rh)
        left = _place((b_left + b_right) / 2 * rw / width, target[1], rw)
    return Crop(height, width, rh, rw, top, left, target[0], target[1])


def _place(centre: float, size: int, total: int) -> int:
    return int(min(max(round(centre - size / 2), 0), total - size))


def resize_and_crop(images: torch.Tensor, crop: Crop, mode: str = "bicubic") -> torch.Tensor:
    """B×C×H×W in 0..1 (one size for the batch) → B×C×h×w as ``crop`` says. Downscaling is antialiased (the
    filter widens with the scale factor, like PIL's); bicubic overshoot is clamped back to 0..1."""
    size = (crop.resized_height, crop.resized_width)
    x = images.float()
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(
            x,
            size=size,
            mode=mode,
            antialias=mode in ("bicubic", "bilinear"),
            align_corners=False if mode in ("bicubic", "bilinear") else None,
        )
        x = x.clamp(0, 1)
    return x[..., crop.top : crop.top + crop.target_height, crop.left : crop.left + crop.target_width].contiguous()


def prepare(
    images: list[torch.Tensor],
    resolution: int,
    masks: list[torch.Tensor | None] | None = None,
    bucket: tuple[int, int] | None = None,
    family: ModelFamily | None = None,
):
    """C×H×W photos (any sizes, 0..1) and optional H×W masks → one bucket's crops: (N×C×h×w pixels, N×1×h×w masks
    or None, per-photo Crops). The bucket (of ``family``'s set): ``bucket`` if given, else the one most photos are
    nearest to among those in which every subject's box fits (one bucket per run, so every batch holds one); each
    photo is planned from its own size, its crop keeping its subject's box."""
    masks = masks if masks is not None else [None] * len(images)
    boxes = [None if m is None else mask_box(m) for m in masks]
    if bucket is None and len({tuple(im.shape[-2:]) for im in images}) == 1:  # the node's batch: one size
        bucket = choose_bucket(images[0].shape[-2], images[0].shape[-1], resolution, boxes, family)
    elif bucket is None:  # photos of several sizes: the bucket most are nearest to in which every subject fits
        votes = Counter(
            choose_bucket(im.shape[-2], im.shape[-1], resolution, [box], family) for im, box in zip(images, boxes)
        )
        ranked = [b for b, _count in votes.most_common()]
        fits = lambda b: all(
            box is None or box_fits(im.shape[-2], im.shape[-1], b, box) for im, box in zip(images, boxes)
        )
        bucket = next((b for b in ranked if fits(b)), ranked[0])
    pixels, out_masks, crops = [], [], []
    for image, mask, box in zip(images, masks, boxes):
        crop = plan_crop(image.shape[-2], image.shape[-1], bucket, box)
        pixels.append(resize_and_crop(image[None], crop)[0])
        if mask is not None:
            out_masks.append(resize_and_crop(mask[None, None].float(), crop, mode="bilinear")[0])
        crops.append(crop)
    stacked_masks = torch.stack(out_masks) if out_masks and len(out_masks) == len(images) else None
    return torch.stack(pixels), stacked_masks, crops
