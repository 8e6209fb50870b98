"""APT's augmentation (paper 003: zoom-out 1–3×, rotation ±15°; docs/DESIGN.md §4.3.3): a bank of views encoded once.

The trainer works on cached latents, so augmenting at train time would mean running the VAE every step.
Instead the caller draws ``views`` random zoom-out/rotation transforms per image from a seeded generator,
applies them to the pixels, encodes the views once with the same VAE, and the trainer swaps a sample for one
of its views with APT's adaptive probability. The VAE sees the real augmented pixels (no latent-space
approximation); the cost is views × images encodes up front and a fixed set of transforms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ZOOM_OUT = (1.0, 3.0)  # the subject shrinks by this factor (paper 003; docs/DESIGN.md §4.3.3)
ROTATION_DEG = 15.0


def random_transforms(
    count: int, generator: torch.Generator, zoom_out: tuple[float, float] = ZOOM_OUT, degrees: float = ROTATION_DEG
) -> torch.Tensor:
    """``count`` affine matrices (count×2×3, ``F.affine_grid`` convention: output → input coordinates in
    −1..1). A zoom-out s scales input coordinates by s, so the picture shrinks by s; the shift keeps the
    shrunk picture inside the frame."""
    u = torch.rand(count, 4, generator=generator, dtype=torch.float64)
    scale = zoom_out[0] + (zoom_out[1] - zoom_out[0]) * u[:, 0]
    angle = torch.deg2rad((2 * u[:, 1] - 1) * degrees)
    shift = (2 * u[:, 2:] - 1) * (scale - 1)[:, None]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    return theta.float()


def apply_transforms(images: torch.Tensor, theta: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Warps B×C×H×W ``images`` by ``theta`` (B×2×3). Pixels: ``border`` repeats the edge (the photo's own
    background fills the margin); masks: ``zeros``."""
    grid = F.affine_grid(theta.to(images.device, torch.float32), list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)


def augmented_views(
    pixels: torch.Tensor, views: int, seed: int, masks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``views`` random views of each image, ordered image-major (row i·views + k is view k of image i):
    (N·views × C×H×W pixels, N·views × 1×H×W masks or None). Same seed → same views."""
    if views < 1:
        raise ValueError(f"augmentation views must be ≥ 1, got {views}")
    generator = torch.Generator().manual_seed(seed + 0x5EED)
    theta = random_transforms(pixels.shape[0] * views, generator)
    out = apply_transforms(pixels.repeat_interleave(views, 0), theta)
    out_masks = None
    if masks is not None:
        out_masks = apply_transforms(masks.repeat_interleave(views, 0), theta, padding="zeros").clamp(0, 1)
    return out.to(pixels.dtype), out_masks


def zoom_of(theta: torch.Tensor) -> torch.Tensor:
    """The zoom-out factor of each matrix (its determinant is s²)."""
    return torch.linalg.det(theta[:, :, :2].double()).sqrt().float()


def angle_of(theta: torch.Tensor) -> torch.Tensor:
    """The rotation of each matrix in degrees."""
    return torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
