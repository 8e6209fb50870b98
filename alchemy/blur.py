"""Subject blurring before the img2img insert (paper 001, appendix A.1; DESIGN §4).

Two modes on one H×W×C float image and one H×W mask (the subject, 1 inside):

- gaussian: ``out = m·blur + (1−m)·image`` with ``blur = cv2.GaussianBlur(kernel_size, σ)``, m the (soft) mask.
- exponential decay: ``G'(x,y) = G(x,y)·e^{−λd}``. d is the distance to the subject, read as
  ``cv2.distanceTransform`` of the inverted mask (0 on the subject) and divided by ``distance_unit`` pixels (the
  appendix gives no unit; the node's default unit is the kernel radius). The per-pixel weight
  ``w = e^{−λ d}`` scales the blur in one of two ways (the appendix's formula admits both readings):

  - ``decay="sigma"``: the Gaussian's σ shrinks, ``σ_p = σ·w`` — the degree of blurring falls off with distance.
    Computed with a stack of blur levels (σ, σ/√2, σ/2, … down to 0.25, then the identity) and per-pixel linear
    interpolation in σ between the two levels around σ_p: an approximation of the exact per-pixel Gaussian
    (:func:`decay_blur_exact`), within 0.015 max / 0.0007 mean absolute error on 0..1 test images (tests and
    bench/blur.py measure it). Levels with σ ≥ 4·f are blurred on an image area-downsampled by f (a power of
    two) with the truncated kernel binned to that grid, then upsampled bilinearly; each level is blurred only
    over the tiles whose σ range meets its band. The top level is the exact full-resolution blur, so the subject
    itself matches gaussian mode.
  - ``decay="opacity"``: ``out = w·blur + (1−w)·image``: the kernel G scaled by w, with the missing mass kept
    on the centre pixel. Exact.

Borders are reflected without repeating the edge pixel (OpenCV's default, BORDER_REFLECT_101) everywhere.
Runs on the CPU (OpenCV); the node converts tensors once.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .masks import BINARY_THRESHOLD, distance_outside

MODES = ("gaussian", "exponential-decay")
DECAYS = ("sigma", "opacity")
BORDER = cv2.BORDER_REFLECT_101
LEVEL_RATIO = 1.0 / math.sqrt(2.0)
# Below this σ a Gaussian is the identity to 3e-4 (neighbour weight e^-8); interpolating to the identity from a
# larger σ would overblur, since the kernel changes fastest in σ below 1.
MIN_SIGMA = 0.25
# A level is downsampled by the largest power of two f with σ/f ≥ this many (coarse) pixels.
DOWNSAMPLE_SIGMA = 4.0
# Tile edge (pixels) of the per-level weighting.
TILE = 32


def check_params(kernel_size: int, sigma: float) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")


def gaussian_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    check_params(kernel_size, sigma)
    return cv2.GaussianBlur(image, (kernel_size, kernel_size), sigma, borderType=BORDER)


def decay_weight(mask: np.ndarray, lam: float, distance_unit: float) -> np.ndarray:
    """e^{−λ d}, d = distance to the subject (mask ≥ 0.5) in units of ``distance_unit`` pixels; 1 on it, 0 if empty."""
    if not distance_unit > 0:
        raise ValueError(f"distance_unit must be > 0 pixels, got {distance_unit}")
    d = distance_outside(mask)
    with np.errstate(over="ignore"):
        return np.exp(-lam * d / distance_unit).astype(np.float32)


def _binned_kernel(kernel_size: int, sigma: float, factor: int) -> np.ndarray:
    """The truncated 1-D Gaussian (radius kernel_size//2, full-res pixels) resampled onto a grid ``factor`` times
    coarser by splitting each tap linearly between its two nearest coarse taps."""
    r = kernel_size // 2
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    taps = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    pos = offsets / factor
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    half = int(np.ceil(r / factor)) + 1
    kernel = np.zeros(2 * half + 1)
    np.add.at(kernel, lo + half, taps * (1 - frac))
    np.add.at(kernel, lo + 1 + half, taps * frac)
    kernel = np.trim_zeros(kernel)  # symmetric, so trimming keeps it centred
    return (kernel / kernel.sum()).astype(np.float32)


def _level_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Blur of one level: full resolution for small σ (kernel cut at 4σ), area-downsampled for large σ."""
    factor = 1
    while sigma / (factor * 2) >= DOWNSAMPLE_SIGMA and factor * 2 <= min(image.shape[:2]) // 2:
        factor *= 2
    if factor == 1:
        size = min(kernel_size, 2 * math.ceil(4 * sigma) + 1)
        return cv2.GaussianBlur(image, (size, size), sigma, borderType=BORDER)
    h, w = image.shape[:2]
    ph, pw = -h % factor, -w % factor
    padded = cv2.copyMakeBorder(image, 0, ph, 0, pw, BORDER) if ph or pw else image
    small = cv2.resize(padded, ((w + pw) // factor, (h + ph) // factor), interpolation=cv2.INTER_AREA)
    kernel = _binned_kernel(kernel_size, sigma, factor)
    small = cv2.sepFilter2D(small, -1, kernel, kernel, borderType=BORDER)
    big = cv2.resize(small, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)
    return big.reshape(padded.shape)[:h, :w]


def _to_tiles(a: np.ndarray, tile: int) -> np.ndarray:
    """H×W×… → (H/tile)×(W/tile)×tile×tile×… (copy), zero-padded to whole tiles."""
    h, w = a.shape[:2]
    ph, pw = -h % tile, -w % tile
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2))
    ty, tx = a.shape[0] // tile, a.shape[1] // tile
    return np.ascontiguousarray(a.reshape(ty, tile, tx, tile, *a.shape[2:]).swapaxes(1, 2))


def sigma_levels(sigma: float) -> list[float]:
    levels = [float(sigma)]
    while levels[-1] * LEVEL_RATIO >= MIN_SIGMA:
        levels.append(levels[-1] * LEVEL_RATIO)
    return levels + [0.0]


def variable_sigma_blur(image: np.ndarray, sigma_map: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Approximates a Gaussian whose σ varies per pixel (``sigma_map`` in 0..σ) by interpolating a level stack."""
    check_params(kernel_size, sigma)
    levels = sigma_levels(sigma)
    h, w, c = image.shape
    s = np.clip(sigma_map, 0.0, sigma).astype(np.float32)
    # Work in TILE×TILE tiles: each level only touches the tiles whose σ range meets its band, so the cost follows
    # the thin bands around the subject, not their bounding boxes. NumPy, single-threaded: torch's thread pool
    # fights OpenCV's on a busy CPU (measured 30× slower element-wise ops).
    s_tiles = _to_tiles(s, TILE)
    tile_min, tile_max = s_tiles.min(axis=(2, 3)), s_tiles.max(axis=(2, 3))
    out = np.zeros(s_tiles.shape + (c,), np.float32)
    for j, level in enumerate(levels):
        # Hat function in σ: 1 at this level, falling linearly to 0 at its neighbours (1 beyond the ends).
        upper = levels[j - 1] if j > 0 else math.inf
        lower = levels[j + 1] if j + 1 < len(levels) else -math.inf
        iy, ix = np.nonzero((tile_min < upper) & (tile_max > lower))
        if iy.size == 0:
            continue
        band = s_tiles[iy, ix]
        coef = np.ones_like(band)
        if lower != -math.inf:
            np.minimum(coef, (band - lower) * np.float32(1.0 / (level - lower)), out=coef)
        if upper != math.inf:
            np.minimum(coef, (upper - band) * np.float32(1.0 / (upper - level)), out=coef)
        np.maximum(coef, 0.0, out=coef)
        ty0, tx0 = iy.min(), ix.min()
        y0, y1 = ty0 * TILE, min(h, (iy.max() + 1) * TILE)
        x0, x1 = tx0 * TILE, min(w, (ix.max() + 1) * TILE)
        if level == 0.0:
            blurred = image[y0:y1, x0:x1]
        else:
            # Blur a crop with a margin of the kernel radius: inside it the result equals the full-image blur.
            m = kernel_size // 2
            cy0, cy1, cx0, cx1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
            crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
            # The top level is exact, so the subject itself matches gaussian mode.
            crop = gaussian_blur(crop, kernel_size, level) if j == 0 else _level_blur(crop, kernel_size, level)
            blurred = crop[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        out[iy, ix] += _to_tiles(blurred, TILE)[iy - ty0, ix - tx0] * coef[..., None]
    return out.swapaxes(1, 2).reshape(out.shape[0] * TILE, out.shape[1] * TILE, c)[:h, :w]


def decay_blur(image: np.ndarray, mask: np.ndarray, *, mode: str = "exponential-decay", kernel_size: int = 151,
               sigma: float = 100.0, lam: float = 5.0, distance_unit: float | None = None,
               decay: str = "sigma") -> tuple[np.ndarray, np.ndarray]:
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
            result = rgb + (blurred - rgb) * strength[..., None]
        else:
            result = variable_sigma_blur(rgb, sigma * strength, kernel_size, sigma)
    out = image.astype(np.float32, copy=True)
    out[..., :3] = result
    return out, strength


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
        rows = idx_y[r + dy:r + dy + h]
        for dx in range(-r, r + 1):
            weight = np.exp(-(dy * dy + dx * dx) / s2)
            acc += weight[..., None] * image[rows][:, idx_x[r + dx:r + dx + w]]
            norm += weight
    return (acc / norm[..., None]).astype(np.float32)
