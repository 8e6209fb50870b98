"""The variable-σ Gaussian behind DecayBlur's sigma decay (paper 001 appendix A.1; docs/DESIGN.md §4.5): a stack
of blur levels interpolated per pixel in σ, computed tile by tile over the bands each level meets, coarse levels
on an area-downsampled image. alchemy/blur.py's docstring gives the measured error; where σ_p < IDENTITY_SIGMA the
output is the input, bit for bit. Borders are reflected without repeating the edge pixel (BORDER_REFLECT_101).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

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
# Coarse levels are read back, and full-resolution levels blurred, in squares of BLOCK and FINE_BLOCK tiles.
BLOCK = 16
FINE_BLOCK = 8
# A level is downsampled by the largest power of two f with σ/f ≥ DOWNSAMPLE_SIGMA coarse pixels, its kernel's
# radius ≥ COARSE_RADIUS coarse pixels (a kernel cut well inside 4σ — 151 px at σ 100 — is nearly a box, whose
# edge the binning and the bilinear read-back smear by about f) and the image ≥ COARSE_SIDE coarse pixels across.
# With f bounded by σ alone (and the padding on the coarse grid) a smooth 64² image was off by 0.054 max / 0.020
# mean and a photo-like 1024² one by 0.011 (paper settings); with these bounds by ≤ 0.0061 / 0.0007 at every kind
# and size measured (tests/test_blur.py).
DOWNSAMPLE_SIGMA = 4.0
COARSE_RADIUS = 8
COARSE_SIDE = 32
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


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into 0..n−1 without repeating the edge (BORDER_REFLECT_101), also beyond one period."""
    period = 2 * (n - 1) if n > 1 else 1
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


class _Coarse:
    """Area-downsampled copies of one image (one per factor) and blurs of them, read back at full resolution over
    any rectangle: what levels with a large σ are computed on. Each copy is padded first, at full resolution, by
    ``pad`` (the widest kernel's radius) reflected as the exact blur reflects: a coarse image's own border mode
    would mirror about a coarse pixel's centre, f/2 pixels off, and its error grew as the image shrank."""

    def __init__(self, image: np.ndarray, pad: int):
        self.image = image
        self.pad = pad
        self.small: dict[int, tuple[np.ndarray, int]] = {}

    def _down(self, factor: int) -> tuple[np.ndarray, int]:
        """The downsampled copy and its padding in full-resolution pixels (whole coarse pixels)."""
        if factor not in self.small:
            h, w = self.image.shape[:2]
            pad = -(-self.pad // factor) * factor
            bottom, right = pad + -h % factor, pad + -w % factor
            if max(bottom, right) < min(h, w):  # OpenCV reflects once; wider pads reflect again and again
                padded = cv2.copyMakeBorder(self.image, pad, bottom, pad, right, BORDER)
            else:
                rows = _reflect(np.arange(-pad, h + bottom), h)
                cols = _reflect(np.arange(-pad, w + right), w)
                padded = np.ascontiguousarray(self.image[rows][:, cols])
            small = cv2.resize(
                padded, (padded.shape[1] // factor, padded.shape[0] // factor), interpolation=cv2.INTER_AREA
            )
            self.small[factor] = (small, pad)
        return self.small[factor]

    def blur(self, kernel_size: int, sigma: float, factor: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0..y1, columns x0..x1 of the bilinear upsampling of the blurred coarse image."""
        return self.read(self.blurred(kernel_size, sigma, factor), factor, y0, y1, x0, x1)

    def blurred(self, kernel_size: int, sigma: float, factor: int) -> tuple[np.ndarray, int]:
        kernel = _binned_kernel(kernel_size, sigma, factor)
        small, pad = self._down(factor)
        return cv2.sepFilter2D(small, -1, kernel, kernel, borderType=BORDER), pad

    @staticmethod
    def read(blurred: tuple[np.ndarray, int], factor: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0..y1, columns x0..x1 of the bilinear upsampling of a (padded) coarse image. Only the coarse
        pixels under the rectangle (and one more on each side) are upsampled, which gives the same values as
        upsampling the whole image."""
        small, pad = blurred
        y0, y1, x0, x1 = y0 + pad, y1 + pad, x0 + pad, x1 + pad
        hc, wc = small.shape[:2]
        cy0, cy1 = max(0, y0 // factor - 1), min(hc, -(-y1 // factor) + 1)
        cx0, cx1 = max(0, x0 // factor - 1), min(wc, -(-x1 // factor) + 1)
        crop = np.ascontiguousarray(small[cy0:cy1, cx0:cx1])
        big = cv2.resize(crop, ((cx1 - cx0) * factor, (cy1 - cy0) * factor), interpolation=cv2.INTER_LINEAR)
        big = big.reshape((cy1 - cy0) * factor, (cx1 - cx0) * factor, -1)
        return big[y0 - cy0 * factor : y1 - cy0 * factor, x0 - cx0 * factor : x1 - cx0 * factor]


def _downsample_factor(sigma: float, height: int, width: int, kernel_size: int) -> int:
    """The largest power of two f with σ/f ≥ DOWNSAMPLE_SIGMA, the kernel's radius / f ≥ COARSE_RADIUS and
    the image's shorter side / f ≥ COARSE_SIDE (coarse pixels)."""
    radius = _radius(kernel_size, sigma)
    factor = 1
    while (
        sigma / (factor * 2) >= DOWNSAMPLE_SIGMA
        and radius / (factor * 2) >= COARSE_RADIUS
        and min(height, width) / (factor * 2) >= COARSE_SIDE
    ):
        factor *= 2
    return factor


def _level_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Blur of one level: full resolution for small σ (kernel cut at 4σ), area-downsampled for large σ."""
    factor = _downsample_factor(sigma, *image.shape[:2], kernel_size)
    if factor == 1:
        size = 2 * _radius(kernel_size, sigma) + 1
        return cv2.GaussianBlur(image, (size, size), sigma, borderType=BORDER)
    h, w = image.shape[:2]
    return _Coarse(image, kernel_size // 2).blur(kernel_size, sigma, factor, 0, h, 0, w)


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
    coarse = _Coarse(image, kernel_size // 2)
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
        elif (factor := _downsample_factor(level, h, w, kernel_size)) > 1:
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
                blur_fn = functools.partial(_level_blur, kernel_size=kernel_size, sigma=level)
                tiles[sel] = _crop_blur_tiles(image, iy[sel], ix[sel], ty0, ty1, tx0, tx1, margin, blur_fn)
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
