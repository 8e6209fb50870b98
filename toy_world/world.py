"""The toy world: a seeded, procedural image distribution with captions, and a few subjects in 5 views each.

Four object classes with distinct shape and colour statistics (ball, cube, star, cone) on four textured
backgrounds (grass, sand, sky, wood), at varied positions and sizes, 64 px. An object has a main colour (drawn
mostly from its class's palette), a second colour and a pattern (plain, two-tone, ring). A *subject* is one
specific instance: a class, a colour pair and a pattern, seen in 5 views (other places, sizes, backgrounds), as
DreamBench's subjects are. Everything is numpy, deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIZE = 64
CLASSES = ("ball", "cube", "star", "cone")
BACKGROUNDS = ("grass", "sand", "sky", "wood")
COLOURS = {
    "red": (220, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 210, 220),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
}
COLOUR_NAMES = tuple(COLOURS)
PATTERNS = ("plain", "two-tone", "ring")
# Each class's usual main colours (drawn with probability CLASS_COLOUR_P, else any colour).
CLASS_PALETTE = {
    "ball": ("red", "orange", "yellow"),
    "cube": ("blue", "cyan", "white"),
    "star": ("yellow", "orange", "white"),
    "cone": ("green", "purple", "red"),
}
CLASS_COLOUR_P = 0.8
TEMPLATES = ("a photo of a {cls} on {bg}", "a photo of {cls}", "a {cls} on {bg}", "a photo of a {cls}")
# Words of the world's captions (RareTokenPicker's "rare" candidate must be none of them).
VOCABULARY = set(CLASSES) | set(BACKGROUNDS) | {"a", "photo", "of", "on"}


@dataclass(frozen=True)
class Thing:
    """One object instance: what it is and how it looks."""

    cls: str
    colour: str
    second: str
    pattern: str


@dataclass(frozen=True)
class Subject:
    name: str
    token: str
    thing: Thing


# The subjects: instances whose look their class rarely has, so the base model does not draw them by chance.
SUBJECTS = (
    Subject("blue_ring_ball", "iklan", Thing("ball", "blue", "yellow", "ring")),
    Subject("red_green_cube", "vorpa", Thing("cube", "red", "green", "two-tone")),
)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # H×W×3 uint8
    mask: np.ndarray  # H×W float32 in {0, 1}: the object
    thing: Thing
    background: str
    caption: str


def _background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if name == "grass":
        base = np.array((60, 130, 50), np.float32) + rng.normal(0, 18, (size, size, 1)) * (0.4, 1.0, 0.3)
    elif name == "sand":
        base = np.array((200, 175, 120), np.float32) + rng.normal(0, 10, (size, size, 1))
    elif name == "sky":
        base = np.stack([100 + 80 * yy, 150 + 60 * yy, 235 + 0 * yy], -1) + rng.normal(0, 3, (size, size, 1))
    else:  # wood: horizontal stripes
        phase = rng.uniform(0, 2 * math.pi)
        stripes = 0.5 + 0.5 * np.sin(yy * 2 * math.pi * 5 + phase + 0.6 * np.sin(xx * 6))
        base = np.array((120, 75, 40), np.float32) + stripes[..., None] * np.array((50, 35, 20), np.float32)
    return base


def _shape_mask(cls: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if cls == "ball":
        return u**2 + v**2 <= r**2
    if cls == "cube":
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if cls == "star":
        theta = np.arctan2(v, u)
        edge = r * (0.55 + 0.45 * np.cos(5 * theta) ** 2 * (np.cos(5 * theta) > 0))
        return np.hypot(u, v) <= np.maximum(edge, r * 0.5)
    # cone: an upright triangle (not rotated: its point stays up)
    top, bottom = cy - r, cy + r
    half = (yy - top) / (2 * r) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def render(
    thing: Thing,
    background: str,
    rng: np.random.Generator,
    size: int = SIZE,
    place: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``thing`` on ``background``; ``place`` = (cx, cy, r) in pixels, else drawn from ``rng``."""
    if place is None:
        r = rng.uniform(0.17, 0.28) * size
        cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
    else:
        cx, cy, r = place
    angle = rng.uniform(-0.4, 0.4)
    image = _background(background, rng, size)
    mask = _shape_mask(thing.cls, cx, cy, r, angle, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    main, second = np.array(COLOURS[thing.colour], np.float32), np.array(COLOURS[thing.second], np.float32)
    image[mask] = main
    if thing.pattern == "two-tone":
        image[mask & (yy > cy)] = second
    elif thing.pattern == "ring":
        image[mask & ((xx - cx) ** 2 + (yy - cy) ** 2 <= (0.5 * r) ** 2)] = second
    shade = 1.0 - 0.25 * np.clip((xx - cx + yy - cy) / (2 * r), -1, 1)  # light from the top left
    image[mask] *= shade[mask][:, None]
    return np.clip(image, 0, 255).round().astype(np.uint8), mask.astype(np.float32)


def random_thing(rng: np.random.Generator, cls: str | None = None) -> Thing:
    cls = cls or CLASSES[rng.integers(len(CLASSES))]
    if rng.random() < CLASS_COLOUR_P:
        colour = CLASS_PALETTE[cls][rng.integers(3)]
    else:
        colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    second = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    while second == colour:
        second = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    return Thing(cls, colour, second, PATTERNS[rng.integers(len(PATTERNS))])


def sample(rng: np.random.Generator, size: int = SIZE) -> Sample:
    thing = random_thing(rng)
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    image, mask = render(thing, background, rng, size)
    caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(cls=thing.cls, bg=background)
    return Sample(image, mask, thing, background, caption)


def dataset(count: int, seed: int, size: int = SIZE) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [sample(rng, size) for _ in range(count)]


def subject_views(subject: Subject, count: int = 5, size: int = SIZE, seed: int = 0) -> list[Sample]:
    """The subject's views: one per background (cycled), at different places and sizes."""
    rng = np.random.default_rng(10_000 + seed + SUBJECTS.index(subject))
    views = []
    for i in range(count):
        background = BACKGROUNDS[i % len(BACKGROUNDS)]
        image, mask = render(subject.thing, background, rng, size)
        views.append(Sample(image, mask, subject.thing, background, f"a photo of {subject.token} {subject.thing.cls}"))
    return views


def attribute_labels(thing: Thing) -> tuple[int, int, int, int]:
    """(class, main colour, second colour, pattern) indices: what the measuring net is trained to read.
    A plain object has no second colour: its label is the main colour."""
    second = thing.colour if thing.pattern == "plain" else thing.second
    return (
        CLASSES.index(thing.cls),
        COLOUR_NAMES.index(thing.colour),
        COLOUR_NAMES.index(second),
        PATTERNS.index(thing.pattern),
    )
