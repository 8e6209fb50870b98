"""How strongly a model already "knows" a token, from images it generated for it under different seeds.

Paper 001 §3.1: a token with a prior gives similar pictures whatever the seed; one without gives unrelated
pictures. Similarity is the mean pairwise SSIM (scikit-image's implementation) and, when an image encoder is
available, the mean pairwise cosine similarity of its embeddings. Lower = less prior = better placeholder.

Images are numpy arrays N×H×W×C (float, 0..1), the layout ComfyUI's IMAGE already has.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CandidateScore:
    token: str
    ssim: float                       # mean pairwise SSIM of the seed images, in [-1, 1]
    embedding_similarity: float | None  # mean pairwise cosine similarity of image embeddings, or None

    @property
    def prior(self) -> float:
        """The ranking key: the mean of the similarities measured (lower = less prior)."""
        if self.embedding_similarity is None:
            return self.ssim
        return 0.5 * (self.ssim + self.embedding_similarity)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"expected images N×H×W×C, got shape {images.shape}")
    if images.shape[0] < 2:
        raise ValueError(f"variability needs at least 2 images per candidate, got {images.shape[0]}")
    return images


def mean_pairwise_ssim(images: np.ndarray) -> float:
    """Mean SSIM over all unordered pairs (channels averaged, data range 0..1)."""
    from skimage.metrics import structural_similarity

    images = _check_images(images)
    # SSIM's default 7×7 window must fit; tiny previews get the largest odd window that does.
    side = min(images.shape[1], images.shape[2])
    win_size = min(7, side if side % 2 else side - 1)
    if win_size < 3:
        raise ValueError(f"images of {images.shape[1]}×{images.shape[2]} px are too small for SSIM (need ≥ 3 px)")
    values = [structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win_size)
              for a, b in itertools.combinations(images, 2)]
    return float(np.mean(values))


def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """Mean cosine similarity over all unordered pairs of row vectors."""
    embeddings = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    if embeddings.shape[0] < 2:
        raise ValueError(f"embedding spread needs at least 2 embeddings, got {embeddings.shape[0]}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    sims = unit @ unit.T
    upper = np.triu_indices(len(unit), k=1)
    return float(sims[upper].mean())


def score_candidate(token: str, images: np.ndarray, embeddings: np.ndarray | None = None) -> CandidateScore:
    """Scores one candidate from its seed images (and their embeddings, when an encoder was available)."""
    if embeddings is not None and len(embeddings) != len(images):
        raise ValueError(f"{len(embeddings)} embeddings for {len(images)} images of {token!r}")
    embed = None if embeddings is None else mean_pairwise_cosine(embeddings)
    return CandidateScore(token, mean_pairwise_ssim(images), embed)


def rank(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    """Least prior first; ties keep the input order (Python's sort is stable)."""
    return sorted(scores, key=lambda s: s.prior)


def score_table(ranked: Sequence[CandidateScore], rejected: Sequence[tuple[str, str]] = ()) -> str:
    """A plain-text table, one candidate per line, chosen token first; rejected words listed after."""
    has_embed = any(s.embedding_similarity is not None for s in ranked)
    header = ["rank", "token", "ssim"] + (["embed_sim"] if has_embed else []) + ["prior"]
    rows = []
    for i, s in enumerate(ranked, 1):
        row = [str(i), s.token, f"{s.ssim:.4f}"]
        if has_embed:
            row.append("-" if s.embedding_similarity is None else f"{s.embedding_similarity:.4f}")
        rows.append(row + [f"{s.prior:.4f}"])
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.append("(lower prior = more varied images = less the model already means by the token)")
    if rejected:
        lines.append("rejected:")
        lines.extend(f"  {word}: {reason}" for word, reason in rejected)
    return "\n".join(lines)


LABEL_WIDTH = 96  # px of the label column on the left of each contact-sheet row


def contact_sheet(rows: Sequence[tuple[str, np.ndarray]], label_width: int = LABEL_WIDTH) -> np.ndarray:
    """One row per candidate: a label cell (two text lines) then its seed images side by side.

    ``rows`` = (label, images N×H×W×3 float 0..1); all rows need the same N, H, W. Returns H_total×W_total×3
    float32 with H_total = rows·H and W_total = label_width + N·W.
    """
    import cv2

    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    shapes = {np.asarray(images).shape for _label, images in rows}
    if len(shapes) != 1:
        raise ValueError(f"all contact-sheet rows need the same image count and size, got {sorted(shapes)}")
    n, h, w, c = shapes.pop()
    if c != 3:
        raise ValueError(f"contact sheet expects RGB images, got {c} channels")
    sheet = np.zeros((len(rows) * h, label_width + n * w, 3), dtype=np.float32)
    for r, (label, images) in enumerate(rows):
        top = r * h
        cell = np.full((h, label_width, 3), 30, dtype=np.uint8)  # OpenCV 5 draws text on 8-bit images only
        _put_label(cv2, cell, label.split("\n"))
        sheet[top:top + h, :label_width] = cell.astype(np.float32) / 255.0
        for i, image in enumerate(np.asarray(images, dtype=np.float32)):
            sheet[top:top + h, label_width + i * w: label_width + (i + 1) * w] = np.clip(image, 0.0, 1.0)
        sheet[top, :] = 0.5  # a 1 px divider so rows read apart at small sizes
    return sheet


def _put_label(cv2, cell: np.ndarray, lines: Sequence[str]) -> None:
    h, w = cell.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    line_h = max(1, h // (len(lines) + 1))
    for i, text in enumerate(lines):
        # Largest scale that fits the cell's width and its share of the height.
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
        scale = min(0.5, (w - 6) / max(tw, 1), 0.8 * line_h / max(th, 1))
        y = int((i + 1) * line_h + 0.3 * th * scale)
        cv2.putText(cell, text, (3, min(y, h - 2)), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
