"""No-reference image quality: BRISQUE (Mittal et al. 2012), evaluated here in NumPy/SciPy.

The features and the LIVE-trained ε-SVR are those of the ``brisque`` package (rehanguha/brisque 0.2.0,
Apache-2.0): ``brisque_model/svm.txt`` is its libsvm model file, unchanged, and ``brisque_model/normalize.json``
its feature ranges (converted from the package's pickle). The package itself is not a dependency: it needs
``libsvm-official``, which has no Linux/macOS wheels, so installing it takes a C compiler. An RBF ε-SVR is a
sum of kernels, evaluated below in a few lines; tests check the scores against the package's on fixed images.
Lower is better (≈0 pristine, ≈100 heavily distorted).

NIQE is not offered: no maintained library computes it offline here. ``pyiqa`` and ``piq`` fetch their
parameter/weight files from the network at first use, ``scikit-video``'s NIQE (unmaintained since 2018) calls
``scipy.misc.imresize`` (removed from SciPy years ago), ``basicsr`` 1.4.2 (unmaintained since 2022) imports a
torchvision module removed in 0.17, and its ``basicsr-fixed`` fork imports its whole training framework.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent / "brisque_model"

# The features need a few 7×7 windows at half resolution; below this BRISQUE means nothing.
MIN_SIDE = 32


@dataclass(frozen=True)
class BrisqueModel:
    support_vectors: np.ndarray  # S×36, features already scaled to [-1, 1]
    coefficients: np.ndarray  # S
    gamma: float
    rho: float
    feature_min: np.ndarray  # 36
    feature_max: np.ndarray  # 36

    def predict(self, features: np.ndarray) -> float:
        """ε-SVR with an RBF kernel (libsvm's svm_predict): Σ coef·exp(-γ‖x − sv‖²) − ρ."""
        scaled = -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max - self.feature_min)
        distances = ((self.support_vectors - scaled) ** 2).sum(axis=1)
        return float(self.coefficients @ np.exp(-self.gamma * distances) - self.rho)


def read_libsvm_model(text: str, n_features: int = 36) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A libsvm ε-SVR model file (RBF kernel) → support vectors, coefficients, γ, ρ."""
    header, _, body = text.partition("\nSV\n")
    fields = dict(line.split(None, 1) for line in header.splitlines() if line.strip())
    if fields.get("svm_type") != "epsilon_svr" or fields.get("kernel_type") != "rbf":
        raise ValueError(f"BRISQUE model: expected an epsilon_svr with an rbf kernel, got {fields}")
    rows = [line.split() for line in body.splitlines() if line.strip()]
    vectors = np.zeros((len(rows), n_features))
    for r, row in enumerate(rows):
        for item in row[1:]:
            index, value = item.split(":")
            vectors[r, int(index) - 1] = float(value)  # sparse format: absent features are 0
    if len(rows) != int(fields["total_sv"]):
        raise ValueError(f"BRISQUE model: {len(rows)} support vectors, header says {fields['total_sv']}")
    coefficients = np.array([float(row[0]) for row in rows])
    return vectors, coefficients, float(fields["gamma"]), float(fields["rho"])


@functools.lru_cache(maxsize=1)
def load_model(model_dir: Path = MODEL_DIR) -> BrisqueModel:
    vectors, coefficients, gamma, rho = read_libsvm_model((model_dir / "svm.txt").read_text())
    ranges = json.loads((model_dir / "normalize.json").read_text())
    return BrisqueModel(
        vectors,
        coefficients,
        gamma,
        rho,
        np.array(ranges["min"], dtype=np.float64),
        np.array(ranges["max"], dtype=np.float64),
    )


def _gaussian_kernel(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    # Written as the reference does (with the 1/(2πσ²) factor): flat regions put MSCN values at ±1e-13, and
    # rounding differences there flip their sign, which moves the left/right AGGD fits.
    y, x = np.indices((n, n)) - n // 2
    kernel = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return kernel / np.sum(kernel)


def mscn_coefficients(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float gray image in [0, 1]."""
    from scipy import signal

    kernel = _gaussian_kernel()
    mean = signal.convolve2d(gray, kernel, "same")
    deviation = np.sqrt(np.abs(mean**2 - signal.convolve2d(gray**2, kernel, "same")))
    return (gray - mean) / (deviation + 1 / 255)


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching → (α, mean, σ_left, σ_right)."""
    from scipy import optimize, special

    left, right = x[x < 0], x[x >= 0]
    sigma_l = np.sqrt(np.mean(left**2)) if left.size else 0.0
    sigma_r = np.sqrt(np.mean(right**2)) if right.size else 0.0
    gamma_hat = sigma_l / sigma_r
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    big_r = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    phi = lambda a: special.gamma(2 / a) ** 2 / (special.gamma(1 / a) * special.gamma(3 / a))
    alpha = float(optimize.root(lambda a: phi(a) - big_r, [0.2]).x[0])
    constant = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (sigma_r - sigma_l) * constant * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), float(sigma_l), float(sigma_r)


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 18 features of one scale: AGGD fits of the MSCN map and of its four neighbour products."""
    m = mscn_coefficients(gray)
    alpha, _, sigma_l, sigma_r = aggd_fit(m)
    features = [alpha, (sigma_l**2 + sigma_r**2) / 2]
    for product in (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:]):
        alpha, mean, sigma_l, sigma_r = aggd_fit(product)
        features += [alpha, mean, sigma_l**2, sigma_r**2]
    return np.array(features, dtype=np.float64)


def brisque_scores(images: Sequence[np.ndarray]) -> list[float]:
    """BRISQUE of HWC uint8 RGB images (one float each)."""
    import cv2
    import skimage.color

    model = load_model()
    scores = []
    for i, image in enumerate(images):
        if min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(
                f"image {i} is {image.shape[1]}×{image.shape[0]}: BRISQUE needs at least {MIN_SIDE} px on each side"
            )
        gray = skimage.color.rgb2gray(image[..., :3])
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        scores.append(model.predict(np.concatenate([brisque_features(gray), brisque_features(half)])))
    return scores
