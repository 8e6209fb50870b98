"""Mask helpers: grow / feather / resize / bbox on B×H×W masks, checked against hand-computed geometry."""

import math

import pytest
import torch
from image_alchemy.alchemy import masks


def square(h=32, w=32, top=10, left=12, size=6, batch=1):
    m = torch.zeros(batch, h, w)
    m[:, top : top + size, left : left + size] = 1.0
    return m


def test_grow_is_a_disk_dilation_and_negative_erodes():
    m = torch.zeros(1, 31, 31)
    m[0, 15, 15] = 1.0
    grown = masks.grow_mask(m, 5)
    yy, xx = torch.meshgrid(torch.arange(31), torch.arange(31), indexing="ij")
    dist = ((yy - 15) ** 2 + (xx - 15) ** 2).float().sqrt()
    assert torch.all(grown[0][dist <= 4.5] == 1)
    assert torch.all(grown[0][dist > 5.5] == 0)
    # Disk, not a square: the corner of the 11×11 box stays out.
    assert grown[0, 10, 10] == 0
    assert torch.equal(masks.grow_mask(grown, -5), m)
    assert torch.equal(masks.grow_mask(m, 0), m)


def test_grow_keeps_device_dtype_and_batch():
    m = square(batch=3).to(torch.float16)
    out = masks.grow_mask(m, 2)
    assert out.shape == m.shape and out.dtype == torch.float16
    assert out.sum() > m.sum()


def test_feather_is_one_inside_smooth_outside_and_zero_beyond_its_width():
    m = square()
    f = masks.feather_mask(m, 4)[0]
    assert torch.all(f[10:16, 12:18] == 1)
    # Straight edge: pixel k columns right of the square sits at distance k.
    for k, expect in [(1, 1 - 0.25), (2, 0.5), (3, 0.25), (4, 0.0), (6, 0.0)]:
        t = expect
        assert f[12, 17 + k].item() == pytest.approx(t * t * (3 - 2 * t), abs=1e-5), k
    # Everything farther than 4 px from the square is exactly zero.
    far = masks.grow_mask(m, 4)[0] == 0
    assert torch.all(f[far] == 0)
    assert torch.equal(masks.feather_mask(m, 0), m)
    with pytest.raises(ValueError, match="≥ 0"):
        masks.feather_mask(m, -1)


def test_feather_of_empty_mask_stays_empty():
    m = torch.zeros(2, 8, 8)
    assert torch.equal(masks.feather_mask(m, 3), m)
    assert torch.equal(masks.grow_mask(m, 3), m)


def test_distance_outside_matches_euclid():
    m = torch.zeros(20, 20)
    m[5, 5] = 1
    d = masks.distance_outside(m.numpy())
    assert d[5, 5] == 0
    assert d[5, 15] == pytest.approx(10, abs=1e-3)
    assert d[13, 11] == pytest.approx(math.hypot(8, 6), abs=1e-2)
    assert math.isinf(masks.distance_outside(torch.zeros(4, 4).numpy())[0, 0])


def test_resize_mask_sizes_and_range():
    m = square(h=64, w=48)
    small = masks.resize_mask(m, 16, 12)
    assert small.shape == (1, 16, 12)
    assert 0 <= small.min() and small.max() <= 1
    # Area is preserved by antialiased shrinking (a 6×6 square is 36/16 px at 1/4 scale).
    assert small.sum().item() == pytest.approx(36 / 16, rel=0.05)
    big = masks.resize_mask(m, 128, 96)
    assert big.shape == (1, 128, 96) and big.sum().item() == pytest.approx(36 * 4, rel=0.05)
    assert masks.resize_mask(m, 64, 48) is m


def test_mask_bbox():
    m = square(top=3, left=7, size=4)[0]
    assert masks.mask_bbox(m) == (3, 7, 7, 11)
    assert masks.mask_bbox(torch.zeros(5, 5)) is None
    with pytest.raises(ValueError):
        masks.mask_bbox(m[None])


def test_match_batch():
    m = square()
    assert masks.match_batch(m, 4, "Node").shape[0] == 4
    assert masks.match_batch(square(batch=2), 2, "Node").shape[0] == 2
    with pytest.raises(ValueError, match="Node: the mask batch has 2 masks but the image batch has 3"):
        masks.match_batch(square(batch=2), 3, "Node")
