"""ComfyUI's IMAGE and MASK layouts and the arrays the pure functions take, converted in one place.

ComfyUI hands nodes torch tensors: IMAGE is B×H×W×C float 0..1 (RGB, or RGBA), MASK is B×H×W float 0..1. The
OpenCV-based code (blur, mask growth, previews, metrics) works on numpy arrays, one H×W×C image or H×W mask per
item of the batch: indexing the batch axis of :func:`to_numpy`'s result gives exactly those. :func:`to_torch`
goes back. Nothing here imports ComfyUI.
"""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(batch: torch.Tensor) -> np.ndarray:
    """A ComfyUI IMAGE or MASK (or one item of it) as a float32 numpy array on the CPU, same layout."""
    return batch.detach().to("cpu", torch.float32).numpy()


def to_torch(array: np.ndarray, like: torch.Tensor | None = None) -> torch.Tensor:
    """A numpy array (same layout) back as a tensor, on ``like``'s device and in its dtype when given."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if like is None else tensor.to(like.device, like.dtype)


def stack(arrays, like: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item numpy results (H×W×C images or H×W masks) as one ComfyUI batch."""
    batch = torch.stack([to_torch(a) for a in arrays])
    return batch if like is None else batch.to(like.device, like.dtype)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE (or one H×W×C image) → uint8 RGB with alpha dropped, quantized as a saved PNG would be, so the
    detectors, the preview and the metrics see the very pixels a saved image holds."""
    return (to_numpy(images[..., :3]).clip(0, 1) * 255.0).round().astype(np.uint8)


def mask_planes(mask: torch.Tensor | None) -> list[np.ndarray] | None:
    """MASK → one H×W float32 array per image (None stays None)."""
    return None if mask is None else list(to_numpy(mask))
