"""DecayBlur speed vs one cv2.GaussianBlur(151, σ=100) pass on a 1024² RGB float image, and the sigma-decay
approximation's error against the exact per-pixel Gaussian on a smaller image.

Prints ``name: value`` lines (ratios: our time / reference time, same process, same input; goal ≤ 3).
Run: .venv/bin/python bench/blur.py [--size 1024] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_blur():
    """alchemy/blur.py imported as part of the pack package (the repo root never goes on sys.path)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pack_import import import_pack

    import_pack()
    from image_alchemy.alchemy import blur

    return blur


def scene(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(9 * xx) * 0.5 + 0.5, ((xx * 16).astype(int) + (yy * 16).astype(int)) % 2 * 1.0, yy], -1)
    return (0.7 * img + 0.3 * rng.random((size, size, 3))).astype(np.float32)


def subject(size: int, area: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    radius = int(round(size * np.sqrt(area / np.pi)))
    cv2.circle(mask, (size // 2, size // 2), radius, 1.0, -1)
    return mask


def median_ratio(ours, reference, repeat: int) -> tuple[float, float]:
    """Median of (ours / reference) over ``repeat`` back-to-back pairs, so load from other processes hits both
    sides alike; also returns the median reference time."""
    ours(), reference()  # warm-up (allocations, thread pools)
    ratios, refs = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        reference()
        mid = time.perf_counter()
        ours()
        end = time.perf_counter()
        ratios.append((end - mid) / (mid - start))
        refs.append(mid - start)
    return statistics.median(ratios), statistics.median(refs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    blur = load_blur()
    img = scene(args.size)
    def reference():
        cv2.GaussianBlur(img, (151, 151), 100)

    for area in (0.1, 0.5):
        mask = subject(args.size, area)
        for name, kwargs in [("gaussian", {"mode": "gaussian"}),
                             ("decay_sigma", {"decay": "sigma"}),
                             ("decay_opacity", {"decay": "opacity"})]:
            ratio, ref = median_ratio(lambda: blur.decay_blur(img, mask, **kwargs), reference, args.repeat)
            print(f"{name}_{int(area * 100)}pct_vs_cv2_gaussian: {ratio:.2f}")
    print(f"cv2_gaussian_151_s100_seconds: {ref:.4f}")

    # Accuracy of the level stack (downsampled levels included) against the exact formula.
    small = scene(128, seed=1)
    mask = subject(128, 0.1)
    out, strength = blur.decay_blur(small, mask, kernel_size=61, sigma=40.0, lam=5.0, distance_unit=30.0)
    exact = blur.decay_blur_exact(small, 40.0 * strength, 61)
    err = np.abs(out - exact)
    print(f"decay_sigma_max_abs_error_128px: {err.max():.4f}")
    print(f"decay_sigma_mean_abs_error_128px: {err.mean():.5f}")


if __name__ == "__main__":
    main()
