"""How strongly a model already "knows" a token, from images it generated for it under different seeds.

Paper 001 §3.1 (docs/DESIGN.md §4.1): a token with a prior gives similar pictures for any seed; one without, unrelated
pictures. The similarity is ONE measure, never a mix of scales: the mean pairwise cosine similarity of image
embeddings when an image encoder is wired (meaning), else the mean pairwise SSIM (layout; the fallback).

A raw similarity depends on the model, the size and the measure, so it is calibrated between two references
sampled the same way: the class word (a strong prior, prior 1) and the empty prompt (the unconditioned model,
no prior, prior 0). The calibrated prior is reported in [0, 1]; the pick is the lowest.

Images are numpy arrays N×H×W×C (float, 0..1), the layout ComfyUI's IMAGE already has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .tokens import word_frequency

# SSIM compares layout, which a 256 px thumbnail keeps; full 1024² pairs would cost seconds per candidate.
SSIM_SIDE = 256
# References closer than this give no scale to calibrate against (e.g. an untrained model): prior unknown.
MIN_SPAN = 1e-3


@dataclass(frozen=True)
class CandidateScore:
    token: str
    similarity: float  # mean pairwise similarity of the seed images (the measure's scale)
    measure: str  # "embed_cos" or "ssim"
    prior: float | None = None  # calibrated: 0 = as varied as the empty prompt, 1 = as the class word


@dataclass(frozen=True)
class Calibration:
    """The two references' raw similarities, same measure and sampling as the candidates."""

    class_word: float  # strong prior → 1
    empty: float  # no prior → 0

    @property
    def separates(self) -> bool:
        return self.class_word - self.empty > MIN_SPAN

    def prior(self, similarity: float) -> float | None:
        if not self.separates:
            return None
        return float(np.clip((similarity - self.empty) / (self.class_word - self.empty), 0.0, 1.0))


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"expected images N×H×W×C, got shape {images.shape}")
    if images.shape[0] < 2:
        raise ValueError(f"variability needs at least 2 images per candidate, got {images.shape[0]}")
    return images


def thumbnails(images: np.ndarray, side: int = SSIM_SIDE) -> np.ndarray:
    """Images shrunk (area filter) so the longer side is at most ``side``; smaller ones are returned as is."""
    import cv2

    images = np.asarray(images)
    h, w = images.shape[1:3]
    scale = side / max(h, w)
    if scale >= 1.0:
        return images
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(np.asarray(im, dtype=np.float32), size, interpolation=cv2.INTER_AREA) for im in images])


def _window_means(a: np.ndarray, win: int) -> np.ndarray:
    """Mean over every win×win window that lies fully inside the image, for N×H×W×C ``a``: the windows skimage
    keeps after cropping its filter radius, so the border rule never enters the result."""
    import cv2

    pad = win // 2
    n, h, w, c = a.shape
    out = np.empty((n, h - 2 * pad, w - 2 * pad, c), dtype=np.float64)
    for i in range(n):
        for ch in range(c):  # one plane at a time: cv2 drops a lone channel axis and caps channels at 4
            plane = np.ascontiguousarray(a[i, :, :, ch], dtype=np.float64)
            out[i, :, :, ch] = cv2.boxFilter(plane, -1, (win, win), borderType=cv2.BORDER_REFLECT)[
                pad : h - pad, pad : w - pad
            ]
    return out


def mean_pairwise_ssim(images: np.ndarray) -> float:
    """Mean SSIM over all unordered pairs (channels averaged, data range 0..1).

    The same value as ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1.0)`` averaged
    over the pairs (uniform 7×7 window, sample covariance, border strip dropped), but each image's window means
    and variances are computed once instead of once per pair: 8 seeds make 28 pairs, and per pair only the
    cross term is new.
    """
    images = _check_images(images)
    # SSIM's default 7×7 window must fit; tiny previews get the largest odd window that does.
    side = min(images.shape[1], images.shape[2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"images of {images.shape[1]}×{images.shape[2]} px are too small for SSIM (need ≥ 3 px)")
    c1, c2 = 0.01**2, 0.03**2  # (K·data_range)², skimage's K1, K2
    cov_norm = win * win / (win * win - 1.0)
    mean = _window_means(images, win)
    var = cov_norm * (_window_means(images * images, win) - mean * mean)
    mean_sq, var_c2 = mean * mean + c1 / 2, var + c2 / 2  # per image, so each pair adds two of them
    values = []
    for i in range(len(images) - 1):
        # Image i against every later image at once; only the cross terms are new per pair.
        mean_xy = mean[i] * mean[i + 1 :]
        cov2 = _window_means(images[i] * images[i + 1 :], win)
        cov2 -= mean_xy
        cov2 *= 2 * cov_norm
        cov2 += c2
        mean_xy *= 2
        mean_xy += c1
        mean_xy *= cov2
        mean_xy /= (mean_sq[i] + mean_sq[i + 1 :]) * (var_c2[i] + var_c2[i + 1 :])
        values.extend(mean_xy.reshape(len(mean_xy), -1).mean(axis=1))
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


def similarity(images: np.ndarray, embeddings: np.ndarray | None = None) -> tuple[float, str]:
    """(mean pairwise similarity, measure name): embeddings when given, else SSIM of the thumbnails."""
    if embeddings is not None:
        if len(embeddings) != len(images):
            raise ValueError(f"{len(embeddings)} embeddings for {len(images)} images")
        return mean_pairwise_cosine(embeddings), "embed_cos"
    return mean_pairwise_ssim(thumbnails(_check_images(images))), "ssim"


def score_candidate(
    token: str, images: np.ndarray, embeddings: np.ndarray | None = None, calibration: Calibration | None = None
) -> CandidateScore:
    """Scores one candidate from its seed images (and their embeddings, when an encoder was available)."""
    try:
        value, measure = similarity(images, embeddings)
    except ValueError as e:
        raise ValueError(f"{token!r}: {e}") from e
    return CandidateScore(token, value, measure, None if calibration is None else calibration.prior(value))


def rank(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    """Least prior first. Ranked by raw similarity: the calibration is the same increasing map for every
    candidate, so the order is the prior's order, and it still exists when the references do not separate.
    Ties keep the input order (Python's sort is stable)."""
    measures = {s.measure for s in scores}
    if len(measures) > 1:
        raise ValueError(f"candidates scored with different measures {sorted(measures)} cannot be ranked together")
    return sorted(scores, key=lambda s: s.similarity)


def score_table(
    ranked: Sequence[CandidateScore],
    rejected: Sequence[tuple[str, str]] = (),
    calibration: Calibration | None = None,
    notes: dict[str, Sequence[str]] | None = None,
    footer: Sequence[str] = (),
) -> str:
    """A plain-text table, one candidate per line, chosen token first; references, footer and rejected words
    after. ``notes`` maps a token to extra cells (e.g. source, Zipf frequency, seconds), named by its "" key."""
    notes = dict(notes or {})
    extra_header = list(notes.pop("", []))
    measure = ranked[0].measure if ranked else "similarity"
    header = ["rank", "token", measure, "prior"] + extra_header
    rows = []
    for i, s in enumerate(ranked, 1):
        prior = "-" if s.prior is None else f"{s.prior:.3f}"
        rows.append(
            [str(i), s.token, f"{s.similarity:.4f}", prior] + list(notes.get(s.token, ["-"] * len(extra_header)))
        )
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.append("(prior: 0 = images as varied as the empty prompt's, 1 = as alike as the class word's; lowest wins)")
    if calibration is not None:
        lines.append(
            f"references ({measure}): class word {calibration.class_word:.4f} → prior 1, "
            f"empty prompt {calibration.empty:.4f} → prior 0"
        )
        if not calibration.separates:
            lines.append(
                "  the class word's images are not more alike than the empty prompt's: prior unknown, "
                f"ranked by raw {measure}"
            )
    lines.extend(footer)
    if rejected:
        lines.append("rejected:")
        lines.extend(f"  {word}: {reason}" for word, reason in rejected)
    return "\n".join(lines)


LABEL_WIDTH = 96  # px of the label column on the left of each contact-sheet row


SHEET_SIDE = 192  # px of the longer side of each contact-sheet cell: 21 rows × 8 seeds of 1024² would be 2 GB


def contact_sheet(
    rows: Sequence[tuple[str, np.ndarray]], label_width: int = LABEL_WIDTH, cell_side: int = SHEET_SIDE
) -> np.ndarray:
    """One row per candidate: a label cell (two text lines) then its seed images side by side.

    ``rows`` = (label, images N×H×W×3 float 0..1); all rows need the same N, H, W. Images larger than
    ``cell_side`` are shrunk to it. Returns H_total×W_total×3 float32 with H_total = rows·h and
    W_total = label_width + N·w (h, w: the cell size).
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
    rows = [(label, thumbnails(images, cell_side)) for label, images in rows]
    h, w = rows[0][1].shape[1:3]
    sheet = np.zeros((len(rows) * h, label_width + n * w, 3), dtype=np.float32)
    for r, (label, images) in enumerate(rows):
        top = r * h
        cell = np.full((h, label_width, 3), 30, dtype=np.uint8)  # OpenCV 5 draws text on 8-bit images only
        _put_label(cv2, cell, label.split("\n"))
        sheet[top : top + h, :label_width] = cell.astype(np.float32) / 255.0
        for i, image in enumerate(np.asarray(images, dtype=np.float32)):
            sheet[top : top + h, label_width + i * w : label_width + (i + 1) * w] = np.clip(image, 0.0, 1.0)
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


def passed_over_rows(passed_over) -> list[tuple[str, str]]:
    """The scan's passed-over words for score_table's rejected list: one row per kind of reason ("<kind>:
    <detail>"), naming every word with its detail, e.g. ("scan, end of a frequent word (2)", "useum (museum,
    Zipf 4.40 in en), exico (mexico, …)")."""
    groups: dict[str, list[str]] = {}
    for r in passed_over:
        kind, _, detail = r.reason.partition(": ")
        groups.setdefault(kind, []).append(f"{r.word} ({detail})" if detail else r.word)
    return [(f"scan, {kind} ({len(words)})", ", ".join(words)) for kind, words in groups.items()]


def table_notes(words, source, spent, frequencies) -> dict:
    """score_table's extra columns: where each word came from, its Zipf frequency, seconds per candidate."""
    notes = {"": ["source", "zipf", "s/cand"]}
    for word in words:
        zipf, lang = frequencies[word] if word in frequencies else word_frequency(word)
        seconds = "cached" if spent[word] is None else f"{spent[word]:.2f}"
        notes[word] = [source[word], f"{zipf:.2f}{'(' + lang + ')' if zipf else ''}", seconds]
    return notes


def table_footer(n_words, n_seeds, sampled, width, height, steps) -> list[str]:
    """score_table's footer: how many images, how many sampled now, and what sampling cost."""
    images = (n_words + 2) * n_seeds
    lines = [
        f"{images} images: ({n_words} candidates + 2 references) × {n_seeds} seeds at {width}×{height}, "
        f"{steps} steps; {len(sampled) * n_seeds} sampled now, the rest from the cache"
    ]
    if sampled:
        per_set = sum(sampled) / len(sampled)
        lines.append(
            f"cost: {per_set:.2f} s per candidate ({per_set / n_seeds:.3f} s per image), "
            f"{sum(sampled):.1f} s sampling in all"
        )
    return lines


def sheet_rows(ranked, references, images_by_token, class_word: str) -> list:
    """The contact sheet's labelled rows: the two references, then the ranked candidates with their prior."""
    label = lambda s: f"{s.prior:.3f}" if s.prior is not None else f"sim {s.similarity:.3f}"
    rows = [(f"ref {class_word}\nprior 1", references["class"]), ("ref empty\nprior 0", references["empty"])]
    return rows + [(f"#{n} {s.token}\n{label(s)}", images_by_token[s.token]) for n, s in enumerate(ranked, 1)]
