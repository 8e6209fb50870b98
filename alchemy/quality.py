"""No-reference image quality: BRISQUE (Mittal et al. 2012) through the maintained ``brisque`` package.

``brisque`` (PyPI, Apache-2.0) ships its LIVE-trained SVR model inside the wheel, so nothing is downloaded at run
time. Lower is better (≈0 pristine, ≈100 heavily distorted).

NIQE is not offered: no maintained library computes it offline here. ``pyiqa`` and ``piq`` fetch their
parameter/weight files from the network at first use, ``scikit-video``'s NIQE (unmaintained since 2018) calls
``scipy.misc.imresize`` (removed from SciPy years ago), ``basicsr`` 1.4.2 (unmaintained since 2022) imports a
torchvision module removed in 0.17, and its ``basicsr-fixed`` fork imports its whole training framework and
pulls in tb-nightly, lmdb, yapf and opencv-python (which clobbers ComfyUI's opencv-python-headless). The issue
asks for a library, not a re-implementation.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# The library's features need a few 7×7 windows at half resolution; below this BRISQUE means nothing.
MIN_SIDE = 32


def _brisque_model():
    try:
        from brisque import BRISQUE
    except ImportError as e:
        raise RuntimeError("BRISQUE needs the Python package `brisque` (it ships its own model; nothing is "
                           "downloaded): `pip install brisque`, or turn BRISQUE off.") from e
    return BRISQUE(url=False)


def brisque_scores(images: Sequence[np.ndarray]) -> list[float]:
    """BRISQUE of HWC uint8 RGB images (one float each)."""
    import cv2
    import skimage.color

    model = _brisque_model()
    scores = []
    for i, image in enumerate(images):
        if min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(f"image {i} is {image.shape[1]}×{image.shape[0]}: BRISQUE needs at least "
                             f"{MIN_SIDE} px on each side")
        # The library's own score() steps (gray, features at full and half scale, SVR), but the features are
        # flattened to floats first: its score() calls float() on 1-element arrays, an error since NumPy 2.
        gray = skimage.color.rgb2gray(image[..., :3])
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        features = np.concatenate([model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6)
                                   for g in (gray, half)])
        features = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])
        scores.append(float(model.calculate_image_quality_score(features)))
    return scores
