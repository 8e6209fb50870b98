"""DreamBooth's subject-fidelity metrics as paper 001 §5.1 reports them (DINO, CLIP-I, CLIP-T; docs/DESIGN.md §4.7).

- DINO / CLIP-I: for every generated image, the mean cosine similarity of its image embedding to the embeddings of
  all real subject images; a prompt's score and the overall score are means over images (every image has the
  same references, so the overall mean is DreamBooth's mean over all generated×real pairs).
- CLIP-T: cosine similarity between a generated image's CLIP image embedding and its prompt's text embedding.
- "real" row: mean over distinct pairs of real images (the paper's "Real" line, the ceiling of DINO / CLIP-I).
- Subject region (paper 001 §5.1, "in the subject region"): with masks, DINO and CLIP-I embed the crop of each
  image to its mask's bounding box (plus a margin); CLIP-T always sees the whole image, since the prompt
  describes the whole scene.

Pure: torch/numpy only; the backbones come in as objects with ``embed_images`` / ``embed_texts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import layout
from .masks import BINARY_THRESHOLD, mask_bbox

METRICS = ("dino", "clip_i", "clip_t", "brisque")
HEADERS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "brisque": "BRISQUE"}
OVERALL, REAL = "overall", "real (references)"


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N×D and M×D embeddings → N×M cosine similarities (float32)."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def similarity_to_references(generated: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per generated image: mean cosine similarity to every reference (N)."""
    return cosine_matrix(generated, references).mean(dim=1)


def reference_self_similarity(references: torch.Tensor) -> float:
    """Mean cosine similarity over distinct pairs of references; NaN with fewer than two."""
    n = references.shape[0]
    if n < 2:
        return math.nan
    sim = cosine_matrix(references, references)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def text_image_similarity(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of N image embeddings with their N text embeddings (N)."""
    return (F.normalize(images.float(), dim=-1) * F.normalize(texts.float(), dim=-1)).sum(dim=-1)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """ComfyUI IMAGE (B×H×W×C float 0..1) → HWC uint8 RGB arrays, quantized as a saved PNG would be, so the
    node and the CLI score the very same pixels."""
    return list(layout.to_uint8(images))


def crop_to_mask(image: np.ndarray, mask: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Crops an HWC image to the bounding box of ``mask`` (H×W, 0..1, binarized at 0.5), grown by ``margin`` × the
    box size on every side and clipped to the image. The mask is resized to the image when sizes differ."""
    h, w = image.shape[:2]
    plane = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if plane.shape != (h, w):
        plane = F.interpolate(plane[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    box = mask_bbox(plane, BINARY_THRESHOLD)
    if box is None:
        raise ValueError(
            "the subject mask is empty (nothing ≥ 0.5): give a mask that covers the subject, or score without masks"
        )
    top, left, bottom, right = box
    dy, dx = round((bottom - top) * margin), round((right - left) * margin)
    return image[max(0, top - dy) : min(h, bottom + dy), max(0, left - dx) : min(w, right + dx)]


def _crop_all(images, masks, margin, what):
    if masks is None:
        return list(images)
    if len(masks) not in (1, len(images)):
        raise ValueError(
            f"{len(masks)} {what} masks for {len(images)} {what} images: give one mask per image "
            "or a single mask for all"
        )
    out = []
    for i, image in enumerate(images):
        try:
            out.append(crop_to_mask(image, masks[i if len(masks) > 1 else 0], margin))
        except ValueError as e:
            raise ValueError(f"{what} image {i}: {e}") from e
    return out


@dataclass
class ImageScore:
    name: str
    prompt: str
    dino: float | None = None
    clip_i: float | None = None
    clip_t: float | None = None
    brisque: float | None = None


@dataclass
class SummaryRow:
    prompt: str
    n: int
    dino: float | None = None
    clip_i: float | None = None
    clip_t: float | None = None
    brisque: float | None = None


@dataclass
class Evaluation:
    images: list[ImageScore]
    summary: list[SummaryRow]
    settings: dict = field(default_factory=dict)

    def overall(self) -> SummaryRow:
        return next(row for row in self.summary if row.prompt == OVERALL)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "summary": [asdict(r) for r in self.summary],
            "images": [asdict(s) for s in self.images],
        }


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(scores: Sequence[ImageScore], real: SummaryRow | None = None) -> list[SummaryRow]:
    """One row per prompt (in order of first appearance), then the overall row, then the references' row."""
    rows = []
    for prompt in dict.fromkeys(s.prompt for s in scores):
        group = [s for s in scores if s.prompt == prompt]
        rows.append(SummaryRow(prompt, len(group), *(_mean(getattr(s, m) for s in group) for m in METRICS)))
    rows.append(SummaryRow(OVERALL, len(scores), *(_mean(getattr(s, m) for s in scores) for m in METRICS)))
    if real is not None:
        rows.append(real)
    return rows


def evaluate(
    generated: Sequence[np.ndarray],
    prompts: Sequence[str],
    references: Sequence[np.ndarray],
    *,
    dino=None,
    clip=None,
    quality=None,
    names: Sequence[str] | None = None,
    generated_masks: Sequence[np.ndarray] | None = None,
    reference_masks: Sequence[np.ndarray] | None = None,
    margin: float = 0.1,
    clip_t_prompts: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    on_stage: Callable[[str], None] | None = None,
) -> Evaluation:
    """Scores HWC uint8 ``generated`` images (one prompt each) against HWC uint8 ``references``.

    ``dino`` / ``clip``: backbones (None skips their metrics); ``quality``: a callable images → no-reference
    scores (BRISQUE), or None. ``clip_t_prompts`` replaces the prompts for CLIP-T only (e.g. the rare token
    swapped for the class word). Masks select the subject region for DINO / CLIP-I. ``on_stage(name)`` is
    called before each metric ("dino", "clip", "brisque"): a progress / cancel hook.
    """
    stage = on_stage or (lambda name: None)
    _check_counts(generated, prompts, references, clip_t_prompts, dino is not None or clip is not None)
    names = list(names) if names is not None else [f"image_{i:04d}" for i in range(len(generated))]
    scores = [ImageScore(name, prompt) for name, prompt in zip(names, prompts)]
    real = SummaryRow(REAL, len(references))
    gen_regions = _crop_all(generated, generated_masks, margin, "generated")
    ref_regions = _crop_all(references, reference_masks, margin, "reference")

    if dino is not None:
        stage("dino")
        ref = dino.embed_images(ref_regions, device)
        for s, v in zip(scores, similarity_to_references(dino.embed_images(gen_regions, device), ref).tolist()):
            s.dino = v
        real.dino = reference_self_similarity(ref)
    if clip is not None:
        stage("clip")
        ref, gen = clip.embed_images(ref_regions, device), clip.embed_images(gen_regions, device)
        for s, v in zip(scores, similarity_to_references(gen, ref).tolist()):
            s.clip_i = v
        real.clip_i = reference_self_similarity(ref)
        whole = gen if generated_masks is None else clip.embed_images(list(generated), device)
        texts = clip.embed_texts(list(clip_t_prompts or prompts), device)
        for s, v in zip(scores, text_image_similarity(whole, texts).tolist()):
            s.clip_t = v
    if quality is not None:
        stage("brisque")
        for s, v in zip(scores, quality(list(generated))):
            s.brisque = v
        real.brisque = _mean(quality(list(references))) if len(references) else None
    settings = {
        "dino": getattr(dino, "name", None),
        "clip": getattr(clip, "name", None),
        "subject_region": generated_masks is not None or reference_masks is not None,
        "margin": margin,
    }
    return Evaluation(scores, summarize(scores, real), settings)


def _check_counts(generated, prompts, references, clip_t_prompts, with_references: bool) -> None:
    if len(prompts) != len(generated):
        raise ValueError(f"{len(prompts)} prompts for {len(generated)} generated images: give one prompt per image")
    if clip_t_prompts is not None and len(clip_t_prompts) != len(generated):
        raise ValueError(f"{len(clip_t_prompts)} CLIP-T prompts for {len(generated)} generated images")
    if not len(generated):
        raise ValueError("no generated images to score")
    if with_references and not len(references):
        raise ValueError("no reference images: DINO and CLIP-I compare against real subject images")


def _cell(value, width):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—".rjust(width)
    return f"{value:.4f}".rjust(width) if isinstance(value, float) else str(value).rjust(width)


def format_table(rows: Sequence[SummaryRow], prompt_width: int = 48) -> str:
    """A fixed-width text table (monospace), one line per summary row; metrics nobody computed are left out."""
    shown = [m for m in METRICS if any(getattr(r, m) is not None for r in rows)]
    width = min(prompt_width, max([len("prompt")] + [len(r.prompt) for r in rows]))
    header = "prompt".ljust(width) + " | " + "n".rjust(4) + "".join(f" | {HEADERS[m]:>8}" for m in shown)
    lines = [header, "-" * len(header)]
    for r in rows:
        text = r.prompt if len(r.prompt) <= width else r.prompt[: width - 1] + "…"
        lines.append(
            text.ljust(width) + " | " + _cell(r.n, 4) + "".join(" | " + _cell(getattr(r, m), 8) for m in shown)
        )
    return "\n".join(lines)
