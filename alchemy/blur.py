"""Subject blurring before the img2img insert (paper 001 appendix A.1; docs/DESIGN.md §4.5).

Two modes on one H×W×C float image and one H×W mask (the subject, 1 inside):

- gaussian: ``out = m·blur + (1−m)·image`` with ``blur = cv2.GaussianBlur(kernel_size, σ)``, m the (soft) mask.
- exponential decay: ``G'(x,y) = G(x,y)·e^{−λd}``. d is the distance to the subject, read as
  ``cv2.distanceTransform`` of the inverted mask (0 on the subject) and divided by ``distance_unit`` pixels (the
  appendix gives no unit; the node's default unit is the kernel radius). The per-pixel weight
  ``w = e^{−λ d}`` scales the blur in one of two ways (the appendix's formula admits both readings):

  - ``decay="sigma"``: the Gaussian's σ shrinks, ``σ_p = σ·w`` — the degree of blurring falls off with distance.
    Computed with a stack of blur levels (σ, σ·2^-1/4, σ·2^-1/2, … down to 0.25, then the identity) and
    per-pixel linear interpolation in σ between the two levels around σ_p: an approximation of the exact
    per-pixel Gaussian (:func:`decay_blur_exact`), within 0.015 max / 0.001 mean absolute error on 0..1 images.
    Measured with the paper's settings (kernel 151, σ 100, λ 5) on smooth, noise and photo-like (1/f) images
    against the direct evaluation: every pixel at 64², 128² and 160² (the kernel wider than the image), the whole
    subject and pixels sampled in every σ band at 1024² and 2048²: max ≤ 0.0061, mean ≤ 0.0007, subject
    max ≤ 0.0024 (tests/test_blur.py holds every case to 0.01 / 0.001; bench/blur.py adds a checkerboard).
    Levels are blurred on an image area-downsampled by f (a power of two, sigma_stack's bounds on f: σ/f ≥ 4,
    kernel radius/f ≥ 8, shorter side/f ≥ 32) padded beforehand at full resolution by the kernel's radius, with
    the kernel (cut at 4σ) binned to that grid, then upsampled bilinearly — the top level too, so the subject
    differs from gaussian mode by the same small error; each level is computed only over the tiles whose σ
    range meets its band. Where σ_p < IDENTITY_SIGMA (0.125 px) the output is the input, bit for bit.
  - ``decay="opacity"``: ``out = w·blur + (1−w)·image``: the kernel G scaled by w, with the missing mass kept
    on the centre pixel. Exact where w ≥ OPACITY_CUTOFF (2^-10); below it the input, bit for bit (the change
    there would be under 0.1% of the contrast).

:func:`changed_region` says where the output can differ from the input (for the insert's repaint region).

Borders are reflected without repeating the edge pixel (OpenCV's default, BORDER_REFLECT_101) everywhere.
Runs on the CPU (OpenCV); the node converts tensors once.
"""

from __future__ import annotations

import numpy as np

from .masks import BINARY_THRESHOLD, distance_outside
from .sigma_stack import (
    DOWNSAMPLE_SIGMA,
    IDENTITY_SIGMA,
    check_params,
    gaussian_blur,
    sigma_region,
    variable_sigma_blur,
)

# The level stack's constants are part of this module's story (and tests read them here).
__all__ = [
    "DECAYS", "DOWNSAMPLE_SIGMA", "IDENTITY_SIGMA", "MODES", "OPACITY_CUTOFF", "changed_region", "check_params",
    "decay_blur", "decay_blur_exact", "decay_blur_exact_at", "decay_weight", "gaussian_blur", "sigma_region",
    "variable_sigma_blur",
]  # fmt: skip

MODES = ("gaussian", "exponential-decay")
DECAYS = ("sigma", "opacity")
# Opacity decay: weights below this leave the pixel as it is.
OPACITY_CUTOFF = 2.0**-10


def decay_weight(mask: np.ndarray, lam: float, distance_unit: float) -> np.ndarray:
    """e^{−λ d}, d = distance to the subject (mask ≥ 0.5) in units of ``distance_unit`` pixels; 1 on it, 0 if empty."""
    if not distance_unit > 0:
        raise ValueError(f"distance_unit must be > 0 pixels, got {distance_unit}")
    d = distance_outside(mask)
    with np.errstate(over="ignore"):
        return np.exp(-lam * d / distance_unit).astype(np.float32)


def decay_blur(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    mode: str = "exponential-decay",
    kernel_size: int = 151,
    sigma: float = 100.0,
    lam: float = 5.0,
    distance_unit: float | None = None,
    decay: str = "sigma",
) -> tuple[np.ndarray, np.ndarray]:
    """Blurs the subject of one H×W×C float32 image (mask H×W, same size). Returns (image, strength map H×W).

    Only the first three channels are blurred; a fourth (alpha) is passed through. An empty mask returns the
    image unchanged with a zero strength map. ``distance_unit`` defaults to the kernel radius.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    check_params(kernel_size, sigma)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    if not (mask >= BINARY_THRESHOLD).any() and not (mode == "gaussian" and mask.any()):
        return image.copy(), np.zeros(mask.shape, np.float32)
    rgb = np.ascontiguousarray(image[..., :3], dtype=np.float32)
    if mode == "gaussian":
        strength = np.clip(mask, 0.0, 1.0).astype(np.float32)
        blurred = gaussian_blur(rgb, kernel_size, sigma)
        result = rgb + (blurred - rgb) * strength[..., None]
    else:
        unit = float(distance_unit) if distance_unit is not None else max(kernel_size // 2, 1)
        strength = decay_weight(mask, lam, unit)
        if decay == "opacity":
            blurred = gaussian_blur(rgb, kernel_size, sigma)
            w = np.where(strength >= OPACITY_CUTOFF, strength, np.float32(0.0))
            result = rgb + (blurred - rgb) * w[..., None]
        else:
            result = variable_sigma_blur(rgb, sigma * strength, kernel_size, sigma)
    out = image.astype(np.float32, copy=True)
    out[..., :3] = result
    return out, strength


def changed_region(
    strength: np.ndarray, *, mode: str = "exponential-decay", sigma: float = 100.0, decay: str = "sigma"
) -> np.ndarray:
    """H×W float32 0/1: where :func:`decay_blur` (given its strength map) may change the image; everywhere
    else its output is the input, bit for bit."""
    if mode == "gaussian":
        changed = strength > 0
    elif decay == "opacity":
        changed = strength >= OPACITY_CUTOFF
    else:
        changed = sigma_region(np.float32(sigma) * strength)
    return changed.astype(np.float32)


def decay_blur_exact_at(
    image: np.ndarray, sigma_map: np.ndarray, kernel_size: int, ys: np.ndarray, xs: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """:func:`decay_blur_exact` at the listed pixels only (rows ``ys``, columns ``xs``): N×C. The normalised
    square-window Gaussian of one pixel is separable, so each pixel costs one k×k window product."""
    r = kernel_size // 2
    h, w = image.shape[:2]
    off = np.arange(-r, r + 1)

    def reflect(idx, n):  # BORDER_REFLECT_101, also for kernels wider than the image
        period = 2 * (n - 1) if n > 1 else 1
        idx = np.abs(idx) % period
        return np.where(idx >= n, period - idx, idx)

    out = np.zeros((len(ys), image.shape[2]), np.float64)
    for a in range(0, len(ys), chunk):
        y, x = ys[a : a + chunk], xs[a : a + chunk]
        ry, rx = reflect(y[:, None] + off, h), reflect(x[:, None] + off, w)
        s2 = 2.0 * np.maximum(sigma_map[y, x].astype(np.float64), 1e-12) ** 2
        g = np.exp(-(off[None, :] ** 2) / s2[:, None])
        window = image[ry[:, :, None], rx[:, None, :]].astype(np.float64)
        out[a : a + chunk] = np.einsum("ni,nj,nijc->nc", g, g, window) / (g.sum(1) ** 2)[:, None]
    return out.astype(np.float32)


def decay_blur_exact(image: np.ndarray, sigma_map: np.ndarray, kernel_size: int) -> np.ndarray:
    """Direct evaluation of a per-pixel Gaussian: out(p) = Σ_o K_p(o)·I(p+o) over the kernel_size² window,
    K_p ∝ exp(−|o|²/2σ_p²) normalised, identity where σ_p = 0. O(H·W·k²): for tests and small images only."""
    r = kernel_size // 2
    h, w = image.shape[:2]
    idx_y = np.pad(np.arange(h), r, mode="reflect")
    idx_x = np.pad(np.arange(w), r, mode="reflect")
    s2 = 2.0 * np.maximum(sigma_map.astype(np.float64), 1e-12) ** 2
    acc = np.zeros(image.shape, np.float64)
    norm = np.zeros((h, w), np.float64)
    for dy in range(-r, r + 1):
        rows = idx_y[r + dy : r + dy + h]
        for dx in range(-r, r + 1):
            weight = np.exp(-(dy * dy + dx * dx) / s2)
            acc += weight[..., None] * image[rows][:, idx_x[r + dx : r + dx + w]]
            norm += weight
    return (acc / norm[..., None]).astype(np.float32)
