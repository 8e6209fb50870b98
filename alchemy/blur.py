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
    Measured by bench/blur.py: max 0.007, mean ≤ 0.0004 at 1024² with the paper's settings (pixels sampled in
    every σ band of uniform noise, a 4 px checkerboard and a smooth scene, 10% and 50% masks); max 0.012 on a
    128² image with a 61 px kernel (borders and coarse levels weigh more there); tests hold both cases to 0.01. Levels with σ ≥ 4·f are blurred on an image area-downsampled by f (a power of two) with the
    kernel (cut at 4σ) binned to that grid, then upsampled bilinearly — the top level too, so the subject
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

import math

import cv2
import numpy as np

from .masks import BINARY_THRESHOLD, distance_outside

MODES = ("gaussian", "exponential-decay")
DECAYS = ("sigma", "opacity")
BORDER = cv2.BORDER_REFLECT_101
# Level spacing (ratio of neighbouring σ), one value above and one below FINE_BELOW pixels. Both 2^-1/4: with
# 2^-1/2 the interpolation error peaked at σ 0.25–4 (0.025 on noise) and reached 0.012 at σ 16–64 on the bench
# scene (bench/blur.py); 2^-1/2 for σ 4–8 only saved no measurable time.
COARSE_RATIO = 2.0**-0.25
FINE_RATIO = 2.0**-0.25
FINE_BELOW = 4.0
# The smallest blurred level: a Gaussian of σ 0.25 moves a pixel by at most 0.13% of the contrast around it
# (neighbour weight e^-8), so below it the level stack interpolates towards the identity.
MIN_SIGMA = 0.25
# Where the identity level sits: σ_p below this is the input pixel, bit for bit (the exact Gaussian of σ 0.125
# differs from the identity by e^-32).
IDENTITY_SIGMA = 0.125
# Opacity decay: weights below this leave the pixel as it is.
OPACITY_CUTOFF = 2.0**-10
# Coarse levels are read back, and full-resolution levels blurred, in squares of BLOCK and FINE_BLOCK tiles.
BLOCK = 16
FINE_BLOCK = 8
# A level is downsampled by the largest power of two f with σ/f ≥ this many (coarse) pixels.
DOWNSAMPLE_SIGMA = 4.0
# Tile edge (pixels) of the per-level weighting.
TILE = 16


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
    r = _radius(kernel_size, sigma)
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    pos = offsets / factor
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    half = int(np.ceil(r / factor)) + 1
    kernel = np.zeros(2 * half + 1)
    np.add.at(kernel, lo + half, taps * (1 - frac))
    np.add.at(kernel, lo + 1 + half, taps * frac)
    kernel = np.trim_zeros(kernel)  # symmetric, so trimming keeps it centred
    return (kernel / kernel.sum()).astype(np.float32)


def _radius(kernel_size: int, sigma: float) -> int:
    """Kernel radius of a level: the kernel's, cut at 4σ (the tail beyond holds e^-8 of the weight)."""
    return min(kernel_size // 2, math.ceil(4 * sigma))


class _Coarse:
    """Area-downsampled copies of one image (one per factor, padded to whole coarse pixels) and blurs of them,
    read back at full resolution over any rectangle: what levels with a large σ are computed on."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.small: dict[int, np.ndarray] = {}

    def _down(self, factor: int) -> np.ndarray:
        if factor not in self.small:
            h, w = self.image.shape[:2]
            ph, pw = -h % factor, -w % factor
            padded = cv2.copyMakeBorder(self.image, 0, ph, 0, pw, BORDER) if ph or pw else self.image
            self.small[factor] = cv2.resize(
                padded, ((w + pw) // factor, (h + ph) // factor), interpolation=cv2.INTER_AREA
            )
        return self.small[factor]

    def blur(self, kernel_size: int, sigma: float, factor: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0..y1, columns x0..x1 of the bilinear upsampling of the blurred coarse image."""
        return self.read(self.blurred(kernel_size, sigma, factor), factor, y0, y1, x0, x1)

    def blurred(self, kernel_size: int, sigma: float, factor: int) -> np.ndarray:
        kernel = _binned_kernel(kernel_size, sigma, factor)
        return cv2.sepFilter2D(self._down(factor), -1, kernel, kernel, borderType=BORDER)

    @staticmethod
    def read(small: np.ndarray, factor: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0..y1, columns x0..x1 of the bilinear upsampling of a coarse image. Only the coarse pixels under
        the rectangle (and one more on each side) are upsampled, which gives the same values as upsampling the
        whole image."""
        hc, wc = small.shape[:2]
        cy0, cy1 = max(0, y0 // factor - 1), min(hc, -(-y1 // factor) + 1)
        cx0, cx1 = max(0, x0 // factor - 1), min(wc, -(-x1 // factor) + 1)
        crop = np.ascontiguousarray(small[cy0:cy1, cx0:cx1])
        big = cv2.resize(crop, ((cx1 - cx0) * factor, (cy1 - cy0) * factor), interpolation=cv2.INTER_LINEAR)
        big = big.reshape((cy1 - cy0) * factor, (cx1 - cx0) * factor, -1)
        return big[y0 - cy0 * factor : y1 - cy0 * factor, x0 - cx0 * factor : x1 - cx0 * factor]


def _downsample_factor(sigma: float, height: int, width: int) -> int:
    """The largest power of two f with σ/f ≥ DOWNSAMPLE_SIGMA coarse pixels that leaves the image ≥ 2 pixels."""
    factor = 1
    while sigma / (factor * 2) >= DOWNSAMPLE_SIGMA and factor * 2 <= min(height, width) // 2:
        factor *= 2
    return factor


def _level_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Blur of one level: full resolution for small σ (kernel cut at 4σ), area-downsampled for large σ."""
    factor = _downsample_factor(sigma, *image.shape[:2])
    if factor == 1:
        size = 2 * _radius(kernel_size, sigma) + 1
        return cv2.GaussianBlur(image, (size, size), sigma, borderType=BORDER)
    h, w = image.shape[:2]
    return _Coarse(image).blur(kernel_size, sigma, factor, 0, h, 0, w)


def _to_tiles(a: np.ndarray, tile: int, copy: bool = True) -> np.ndarray:
    """H×W×… → (H/tile)×(W/tile)×tile×tile×…, zero-padded to whole tiles (a view when no padding is needed and
    ``copy`` is False: index it to pick tiles)."""
    h, w = a.shape[:2]
    ph, pw = -h % tile, -w % tile
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2))
    ty, tx = a.shape[0] // tile, a.shape[1] // tile
    tiles = np.ascontiguousarray(a).reshape(ty, tile, tx, tile, *a.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(tiles) if copy else tiles


def sigma_levels(sigma: float) -> list[float]:
    """σ, σ·ρ, σ·ρ², … down to MIN_SIGMA, then 0 (the identity); ρ = COARSE_RATIO down to FINE_BELOW, then
    FINE_RATIO: the blur changes fastest with σ where σ is small."""
    levels = [float(sigma)]
    while True:
        ratio = COARSE_RATIO if levels[-1] > FINE_BELOW * 1.0001 else FINE_RATIO
        nxt = levels[-1] * ratio
        if levels[-1] > FINE_BELOW * 1.0001 and nxt < FINE_BELOW:
            nxt = FINE_BELOW  # land on the switch, so the fine spacing starts there
        if nxt < MIN_SIGMA:
            return levels + [0.0]
        levels.append(nxt)


def _hat(band: np.ndarray, level: float, lower: float, upper: float) -> np.ndarray:
    """Interpolation weight of one level: 1 at the level, falling linearly (in σ) to 0 at its neighbours, 1 beyond
    the ends of the stack. The identity level sits at IDENTITY_SIGMA, so every σ_p below that is the identity."""
    coef = np.ones_like(band)
    if lower != -math.inf:
        np.minimum(coef, (band - lower) * np.float32(1.0 / (level - lower)), out=coef)
    if upper != math.inf:
        np.minimum(coef, (upper - band) * np.float32(1.0 / (upper - level)), out=coef)
    return np.maximum(coef, 0.0, out=coef)


def _blocks(iy: np.ndarray, ix: np.ndarray, block: int):
    """Tile indices grouped into block×block tile squares: yields (selector, ty0, ty1, tx0, tx1) per square, the
    selector picking that square's tiles and the bounds their tile bounding box (end exclusive)."""
    key = (iy // block) * (1 << 20) + ix // block
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    for sel in np.split(order, cuts):
        yield sel, iy[sel].min(), iy[sel].max() + 1, ix[sel].min(), ix[sel].max() + 1


def variable_sigma_blur(image: np.ndarray, sigma_map: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Approximates a Gaussian whose σ varies per pixel (``sigma_map`` in 0..σ) by interpolating a level stack.

    Pixels with σ_p < IDENTITY_SIGMA come out as the input exactly (:func:`sigma_region` is where they may not):
    the identity level's weight is 1 there and every other level's 0."""
    check_params(kernel_size, sigma)
    levels = sigma_levels(sigma)
    h, w, c = image.shape
    s = np.clip(sigma_map, 0.0, sigma).astype(np.float32)
    # Work in TILE×TILE tiles: each level only touches the tiles whose σ range meets its band, so the cost follows
    # the thin bands around the subject, not their bounding boxes. NumPy, single-threaded: torch's thread pool
    # fights OpenCV's on a busy CPU (measured 30× slower element-wise ops).
    s_tiles = _to_tiles(s, TILE)
    tile_min, tile_max = s_tiles.min(axis=(2, 3)), s_tiles.max(axis=(2, 3))
    # The result starts as the image and is written through a tile view of itself; tiles whose σ_p are all below
    # IDENTITY_SIGMA are never touched, so they stay the input bit for bit.
    ph, pw = -h % TILE, -w % TILE
    result = np.pad(image, ((0, ph), (0, pw), (0, 0))) if ph or pw else image.copy()
    out = _to_tiles(result, TILE, copy=False)
    touched = tile_max >= IDENTITY_SIGMA
    out[touched] = 0.0
    coarse = _Coarse(image)
    image_tiles = _to_tiles(image, TILE, copy=False)
    for j, level in enumerate(levels):
        position = level if level > 0 else IDENTITY_SIGMA
        upper = levels[j - 1] if j > 0 else math.inf
        lower = (levels[j + 1] if levels[j + 1] > 0 else IDENTITY_SIGMA) if j + 1 < len(levels) else -math.inf
        iy, ix = np.nonzero((tile_min < upper) & (tile_max > lower) & touched)
        if iy.size == 0:
            continue
        coef = _hat(s_tiles[iy, ix], position, lower, upper)
        if level == 0.0:
            tiles = image_tiles[iy, ix]
        elif (factor := _downsample_factor(level, h, w)) > 1:
            # Coarse levels are cheap: the whole (coarse) image is blurred once, and read back block by block.
            small = coarse.blurred(kernel_size, level, factor)
            tiles = np.empty(coef.shape + (c,), np.float32)
            for sel, ty0, ty1, tx0, tx1 in _blocks(iy, ix, BLOCK):
                region = coarse.read(small, factor, ty0 * TILE, min(h, ty1 * TILE), tx0 * TILE, min(w, tx1 * TILE))
                tiles[sel] = _to_tiles(region, TILE, copy=False)[iy[sel] - ty0, ix[sel] - tx0]
        else:
            # Full-resolution levels have short kernels: blur block by block, so a ring's bands cost their area,
            # not the area of the ring's bounding box.
            tiles = np.empty(coef.shape + (c,), np.float32)
            margin = _radius(kernel_size, level)
            for sel, ty0, ty1, tx0, tx1 in _blocks(iy, ix, FINE_BLOCK):
                tiles[sel] = _crop_blur_tiles(
                    image,
                    iy[sel],
                    ix[sel],
                    ty0,
                    ty1,
                    tx0,
                    tx1,
                    margin,
                    lambda crop, level=level: _level_blur(crop, kernel_size, level),
                )
        whole = (coef == 1).all(axis=(1, 2))
        # Tiles at this level's σ only (the subject's inside) take the level as it is.
        out[iy[whole], ix[whole]] = tiles[whole]
        part = ~whole
        out[iy[part], ix[part]] += tiles[part] * coef[part][..., None]
    return result[:h, :w] if ph or pw else result


def _crop_blur_tiles(image, iy, ix, ty0, ty1, tx0, tx1, margin, blur_fn) -> np.ndarray:
    """``blur_fn`` of the tiles ty0..ty1 × tx0..tx1 with ``margin`` pixels of context, as the (iy, ix) tiles."""
    h, w = image.shape[:2]
    y0, y1, x0, x1 = ty0 * TILE, min(h, ty1 * TILE), tx0 * TILE, min(w, tx1 * TILE)
    cy0, cy1, cx0, cx1 = max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)
    blurred = blur_fn(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    return _to_tiles(blurred, TILE, copy=False)[iy - ty0, ix - tx0]


def sigma_region(sigma_map: np.ndarray) -> np.ndarray:
    """Where :func:`variable_sigma_blur` changes the image: σ_p ≥ IDENTITY_SIGMA."""
    return sigma_map >= IDENTITY_SIGMA


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
