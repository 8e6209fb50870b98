"""Subject photos → training squares: the one resize-and-crop both the node and `python -m training fit` use.

The shorter side is scaled to the resolution with an antialiased filter (a 3–6 k phone photo shrunk 3–6× with
plain bicubic aliases fine texture into moiré, which an intentionally overfit LoRA then learns), then the centre
square is cut. SDXL's crop conditioning is given in the resized image's pixels, as SDXL was trained and as
diffusers' and kohya's trainers compute it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SquareCrop:
    """Where the training square comes from: original size, resized size and the crop's top-left corner."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    resolution: int

    def time_ids(self) -> list[int]:
        """SDXL's added conditioning: original size, crop top-left (resized pixels), target size."""
        return [self.height, self.width, self.top, self.left, self.resolution, self.resolution]


def square_crop(height: int, width: int, resolution: int) -> SquareCrop:
    """Shorter side → ``resolution`` (the longer one rounded, never below it), centre square."""
    scale = resolution / min(height, width)
    rh, rw = max(resolution, round(height * scale)), max(resolution, round(width * scale))
    return SquareCrop(height, width, rh, rw, (rh - resolution) // 2, (rw - resolution) // 2, resolution)


def resize_and_crop(images: torch.Tensor, resolution: int, mode: str = "bicubic") -> tuple[torch.Tensor, SquareCrop]:
    """B×C×H×W in 0..1 (one size for the batch) → B×C×R×R and the crop geometry. Downscaling is antialiased (the
    filter widens with the scale factor, like PIL's); bicubic overshoot is clamped back to 0..1."""
    crop = square_crop(images.shape[-2], images.shape[-1], resolution)
    size = (crop.resized_height, crop.resized_width)
    x = images.float()
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode=mode, antialias=mode in ("bicubic", "bilinear"),
                          align_corners=False if mode in ("bicubic", "bilinear") else None)
        x = x.clamp(0, 1)
    x = x[..., crop.top:crop.top + resolution, crop.left:crop.left + resolution]
    return x.contiguous(), crop
