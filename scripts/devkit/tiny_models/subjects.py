"""Synthetic subject photos for tests and the tiny demo: one made-up toy seen 4–5 times.

The same subject (a yellow round "toy" with a red band and two dark eyes) is drawn at different positions,
sizes and angles on different backgrounds, with its mask, so training, masking and insertion have a subject
whose pixels are known exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUNDS = [(70, 110, 160), (60, 140, 80), (150, 120, 90), (120, 120, 130), (40, 60, 90)]


def draw_subject(size: int, index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (RGB uint8 H×W×3, mask float32 H×W in {0,1}) of view ``index`` of the toy."""
    rng = np.random.default_rng(seed * 1000 + index)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = np.array(BACKGROUNDS[index % len(BACKGROUNDS)], np.float32)
    image = bg + rng.normal(0, 8, (size, size, 3)).astype(np.float32)  # textured background
    image += (yy[..., None] / size) * 30.0  # soft vertical light gradient

    radius = size * (0.22 + 0.06 * (index % 3))
    cx = size * (0.5 + 0.12 * math.cos(index * 2.1))
    cy = size * (0.5 + 0.10 * math.sin(index * 1.7))
    angle = 0.35 * (index - 2)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    body = (u / radius) ** 2 + (v / (radius * 0.85)) ** 2 <= 1.0
    band = body & (np.abs(v - radius * 0.25) < radius * 0.12)
    eyes = np.zeros_like(body)
    for side in (-1, 1):
        eyes |= ((u - side * radius * 0.35) ** 2 + (v + radius * 0.25) ** 2) <= (radius * 0.12) ** 2
    image[body] = (235, 200, 40)
    image[band] = (200, 40, 40)
    image[eyes & body] = (25, 20, 20)
    return np.clip(image, 0, 255).astype(np.uint8), body.astype(np.float32)


def subject_set(count: int = 4, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` views: images uint8 N×H×W×3 and masks float32 N×H×W."""
    views = [draw_subject(size, i, seed) for i in range(count)]
    return np.stack([v[0] for v in views]), np.stack([v[1] for v in views])


def synthetic_subject(count: int = 4, size: int = 256, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The "subject": a red disc with a yellow stripe on different pale backgrounds, at shifting places.
    Returns HWC float images in 0..1 and their HW boolean subject masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, masks = [], []
    for _ in range(count):
        img = np.empty((size, size, 3), np.float32)
        img[:] = rng.uniform(0.6, 0.95, 3)
        cy, cx, r = size / 2 + rng.uniform(-20, 20), size / 2 + rng.uniform(-20, 20), size * 0.28
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[disc] = (0.85, 0.1, 0.1)
        img[disc & (np.abs(yy - cy) < r * 0.2)] = (0.95, 0.85, 0.1)
        images.append(img)
        masks.append(disc)
    return images, masks


def write_subject_folder(folder: Path, count: int = 4, size: int = 256) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(synthetic_subject(count, size)[0]):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"subject_{i}.png")
    return folder
