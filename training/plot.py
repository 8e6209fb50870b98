"""Loss curve as a picture (the node's IMAGE output): raw loss faint, a running mean on top."""

from __future__ import annotations

import numpy as np


def smooth(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or window <= 1:
        return v
    kernel_sums = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):
        lo = max(0, i - window + 1)
        out[i] = (kernel_sums[i + 1] - kernel_sums[lo]) / (i + 1 - lo)
    return out


def loss_curve_image(losses: list[float], width: int = 512, height: int = 256) -> np.ndarray:
    """HWC float32 RGB in 0..1. An empty list gives a blank chart with a note, never an error."""
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 48, 12, 22, 28
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (200, 200, 200), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if not losses:
        cv2.putText(img, "no training steps", (left + 8, height // 2), font, 0.5, (90, 90, 90), 1, cv2.LINE_AA)
        return img.astype(np.float32) / 255.0
    raw = np.asarray(losses, dtype=np.float64)
    avg = smooth(losses, max(1, len(losses) // 20))
    lo, hi = float(raw.min()), float(raw.max())
    if hi <= lo:  # one step, or a flat loss: centre the line in a band around the value
        pad = max(abs(hi), 1e-6) * 0.5
        lo, hi = lo - pad, hi + pad
    span = hi - lo

    def points(values: np.ndarray) -> np.ndarray:
        if len(values) == 1:  # a single step spans the chart, so it is a visible line and not one pixel
            values = np.repeat(values, 2)
        xs = left + np.linspace(0, width - left - right, num=len(values))
        ys = (height - bottom) - (values - lo) / span * (height - top - bottom)
        return np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)

    cv2.polylines(img, [points(raw)], False, (170, 200, 235), 1, cv2.LINE_AA)
    cv2.polylines(img, [points(avg)], False, (30, 90, 200), 2, cv2.LINE_AA)
    cv2.putText(img, f"{hi:.4g}", (2, top + 4), font, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"{lo:.4g}", (2, height - bottom), font, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {len(losses)}", (width - right - 70, height - 8), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"loss  first {avg[0]:.4f}  last {avg[-1]:.4f}", (left, 15), font, 0.4, (30, 30, 30), 1, cv2.LINE_AA
    )
    return img.astype(np.float32) / 255.0
