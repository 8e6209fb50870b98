"""Grounded SAM over an image batch: text → boxes (GroundingDINO) → SAM hypotheses → M* per box → one mask.

Every input image gets exactly one mask (the union over the prompt's phrases) and one mask per phrase, also when
nothing is detected or SAM returns only empty hypotheses for every box: the caller's policies decide what, for
nothing found and for more found than asked for, and the result's ``notes`` say what happened, for the preview.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import grounding, layout, mask_select
from . import masks as mask_ops
from . import sam as sam_ops

log = logging.getLogger(__name__)

ON_EMPTY = ("empty mask", "error", "whole image")
# When a phrase finds more boxes than max_objects: keep the first max_objects in the chosen order (the preview
# numbers them and says how many were dropped), or stop the prompt.
ON_SEVERAL = ("use the first", "error")


class NothingDetected(ValueError):
    """The prompt matched no box in an image and the policy is 'error'."""


class SeveralDetected(ValueError):
    """A phrase matched more boxes than max_objects and the policy is 'error'."""


@dataclass
class ImageResult:
    boxes: torch.Tensor  # N×4 pixel boxes above the threshold: each phrase's, most confident first
    scores: torch.Tensor  # N
    labels: list[str] = field(default_factory=list)  # the phrase each box was found for
    picked: list[int] = field(default_factory=list)  # boxes segmented: each phrase's first max_objects in order
    kept: list[int] = field(default_factory=list)  # those of them whose mask is in the union (non-empty M*)
    ranks: dict[int, int] = field(default_factory=dict)  # kept box → its place (1, 2, …) among its phrase's kept
    phrase_masks: torch.Tensor | None = None  # P×H×W, one per phrase in prompt order (policy applied)
    notes: list[str] = field(default_factory=list)  # what the policies did and why

    @property
    def note(self) -> str:
        return "; ".join(self.notes)


def segment_batch(
    images: torch.Tensor,
    detector: grounding.GroundingDino,
    sam: torch.nn.Module,
    prompt: str,
    *,
    box_threshold: float,
    text_threshold: float,
    area_penalty: float,
    max_objects: int,
    on_empty: str,
    grow: int = 0,
    feather: int = 0,
    order: str = "most confident",
    on_several: str = "use the first",
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, list[ImageResult]]:
    """B×H×W×C images → B×H×W float masks (0..1) and what was found per image.

    Each phrase of ``prompt`` ("dog . cat") is detected on its own; its first ``max_objects`` boxes in ``order``
    (``mask_select.ORDERS``) are segmented (one SAM image embedding for all phrases) and make the phrase's mask;
    the returned mask is the union over the phrases, and ``ImageResult.phrase_masks`` holds them one by one.
    ``on_empty`` (ON_EMPTY) applies to each phrase that keeps nothing, ``on_several`` (ON_SEVERAL) to each that
    found more than ``max_objects`` boxes. The models must already be on ``device``.
    """
    _check_choices(on_empty, on_several, order)
    phrases = grounding.phrases(prompt)
    if not phrases:
        raise ValueError("the text prompt is empty: name the subject to find, e.g. 'dog' (or 'dog . cat').")
    batch, height, width = images.shape[:3]
    out = torch.zeros(batch, height, width)
    results = []
    options = dict(
        box_threshold=box_threshold, text_threshold=text_threshold, area_penalty=area_penalty,
        max_objects=max_objects, on_empty=on_empty, order=order, on_several=on_several, device=device,
    )  # fmt: skip
    for i in range(batch):
        # uint8 RGB: what both detectors expect
        result = _segment_image(
            layout.to_uint8(images[i]), f"in image {i + 1} of {batch}", phrases, detector, sam, **options
        )
        out[i] = result.phrase_masks.amax(0)
        results.append(result)
        if progress is not None:
            progress(i + 1)
    for r in results:
        r.phrase_masks = _finish(r.phrase_masks, grow, feather)
    return _finish(out, grow, feather), results


def _segment_image(
    rgb: np.ndarray, where: str, phrases: list[str], detector, sam, *, box_threshold, text_threshold, area_penalty,
    max_objects, on_empty, order, on_several, device,
) -> ImageResult:  # fmt: skip
    """One image: every phrase detected, its chosen boxes segmented, its mask kept in ``phrase_masks``."""
    height, width = rgb.shape[:2]
    found = [grounding.detect(detector, rgb, phrase, box_threshold, text_threshold, device) for phrase in phrases]
    offsets = np.cumsum([0] + [len(f["boxes"]) for f in found]).tolist()
    result = ImageResult(
        torch.cat([f["boxes"] for f in found]),
        torch.cat([f["scores"] for f in found]),
        [phrase for phrase, f in zip(phrases, found) for _ in range(len(f["boxes"]))],
    )
    chosen = [mask_select.order_boxes(f["boxes"], f["scores"], order)[:max_objects] for f in found]
    _apply_several(result, phrases, found, max_objects, order, on_several, where)
    # One image embedding for every phrase's chosen boxes.
    flat = [offsets[p] + j for p, picks in enumerate(chosen) for j in picks]
    result.picked = flat
    hypotheses, _ = sam_ops.segment_boxes(sam, rgb, result.boxes[flat]) if flat else (None, None)
    per_phrase, row = [], 0
    for p, (phrase, picks) in enumerate(zip(phrases, chosen)):
        rows = slice(row, row + len(picks))
        row += len(picks)
        mask = torch.zeros(height, width, dtype=torch.bool)
        kept = []
        if picks:
            mask, kept_rows = mask_select.union_of_chosen(hypotheses[rows], result.boxes[flat][rows], area_penalty)
            kept = [offsets[p] + picks[r] for r in kept_rows]
        for rank, box in enumerate(kept, 1):
            result.ranks[box] = rank
        result.kept += kept
        mask = mask.float()
        if not kept:
            empty = f"SAM returned only empty masks for the {len(picks)} box(es) of '{phrase}' {where}"
            missed = f"nothing matching '{phrase}' {where} at box threshold {box_threshold:g}"
            _apply_empty(result, mask, empty if len(found[p]["boxes"]) else missed, on_empty)
        per_phrase.append(mask)
    result.phrase_masks = torch.stack(per_phrase)
    return result


def _check_choices(on_empty: str, on_several: str, order: str) -> None:
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    if on_several not in ON_SEVERAL:
        raise ValueError(f"on_several must be one of {ON_SEVERAL}, got {on_several!r}")
    if order not in mask_select.ORDERS:
        raise ValueError(f"order must be one of {mask_select.ORDERS}, got {order!r}")


def _apply_several(result: ImageResult, phrases, found, max_objects: int, order: str, on_several: str, where: str):
    """The if_several_found policy for each phrase with more than ``max_objects`` boxes: an error, or a note."""
    for phrase, f in zip(phrases, found):
        if len(f["boxes"]) > max_objects:
            found_here = f"'{phrase}': {len(f['boxes'])} found {where}"
            if on_several == "error":
                raise SeveralDetected(f"{found_here} but max_objects is {max_objects}")
            result.notes.append(f"{found_here}, kept {max_objects} ({order} first): {on_several} (if_several_found)")


def _apply_empty(result: ImageResult, mask: torch.Tensor, why: str, on_empty: str) -> None:
    """The if_nothing_found policy for a phrase that kept nothing: an error, or ``mask`` filled and a note."""
    if on_empty == "error":
        raise NothingDetected(why)
    log.warning("GroundedSAM: %s; using the %s policy.", why, on_empty)
    result.notes.append(f"{why}: {on_empty} (if_nothing_found)")
    mask.fill_(1.0 if on_empty == "whole image" else 0.0)


def _finish(masks: torch.Tensor, grow: int, feather: int) -> torch.Tensor:
    if grow:
        masks = mask_ops.grow_mask(masks, grow)
    if feather:
        masks = mask_ops.feather_mask(masks, feather)
    return masks.clamp_(0, 1)


def phrase_mask_batch(results: list[ImageResult]) -> torch.Tensor:
    """The per-phrase masks of a batch as one MASK batch, image by image and, per image, in prompt order:
    mask i·P + j is phrase j of image i (P phrases)."""
    return torch.cat([r.phrase_masks for r in results])


def kept_boxes(results: list[ImageResult]) -> list[list[dict]]:
    """Per image, the kept boxes as ComfyUI's BOUNDING_BOX dicts (x, y, width, height in pixels, plus score and
    phrase), in the order of the mask's phrases and, per phrase, the chosen order: what SAM3_Detect returns."""
    out = []
    for r in results:
        frame = []
        for i in r.kept:
            x0, y0, x1, y1 = (float(v) for v in r.boxes[i])
            frame.append(
                {
                    "x": x0,
                    "y": y0,
                    "width": x1 - x0,
                    "height": y1 - y0,
                    "score": float(r.scores[i]),
                    "label": r.labels[i],
                }
            )
        out.append(frame)
    return out


# Pictures smaller than this (short side, px) are enlarged by a whole factor in the preview, so its box tags and
# note stay readable and cover little of the picture.
PREVIEW_MIN_SIDE = 256


def draw_preview(images: torch.Tensor, masks: torch.Tensor, results: list[ImageResult]) -> torch.Tensor:
    """Images with the mask tinted and the boxes outlined (kept boxes green, the others grey), B×H'×W'×3: a small
    picture enlarged (nearest) to at least PREVIEW_MIN_SIDE, and any policy note in a black band *above* it (one
    height for the whole batch), never over the picture."""
    import cv2

    height, width = images.shape[1:3]
    factor = max(1, -(-PREVIEW_MIN_SIDE // max(1, min(height, width))))
    pictures = []
    tint = np.array([255, 64, 64], np.float32)
    for image, mask, result in zip(images, masks, results):
        rgb = layout.to_uint8(image).astype(np.float32)
        alpha = 0.45 * layout.to_numpy(mask)[..., None]
        canvas = (rgb * (1 - alpha) + tint * alpha).round().astype(np.uint8)
        canvas = np.ascontiguousarray(canvas.repeat(factor, 0).repeat(factor, 1))
        thickness = max(1, round(min(canvas.shape[:2]) / 256))
        for j, box in enumerate(result.boxes.tolist()):
            colour = (64, 255, 64) if j in result.kept else (160, 160, 160)
            x0, y0, x1, y1 = (int(round(v * factor)) for v in box)
            cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
        for j in result.kept:  # what was kept, named: "dog 1", "dog 2", "cat 1" (its place in the chosen order)
            x0, y0 = (int(round(v * factor)) for v in result.boxes[j, :2].tolist())
            draw_label(canvas, f"{result.labels[j]} {result.ranks.get(j, 1)}", x0, y0)
        pictures.append(canvas)
    if not pictures:
        return images[..., :3].clone()
    notes = [note_lines(r.note, pictures[0].shape[1]) if r.note else [] for r in results]
    band = max(note_band_height(lines, pictures[0].shape[1]) for lines in notes)
    previews = []
    for canvas, lines in zip(pictures, notes):
        if band:
            top = np.zeros((band, canvas.shape[1], 3), np.uint8)
            draw_note(top, lines)
            canvas = np.concatenate([top, canvas])
        previews.append(layout.to_torch(canvas).float() / 255.0)
    return torch.stack(previews)


def draw_label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    """Black-on-green tag with ``text`` at the top left corner of a kept box (inside the image)."""
    import cv2

    height, width = canvas.shape[:2]
    scale = max(0.3, min(1.0, width / 1200))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(0, x), max(0, width - w - 4))
    y = min(max(0, y), max(0, height - h - base - 4))
    canvas[y : y + h + base + 4, x : x + w + 4] = (64, 255, 64)
    cv2.putText(canvas, text, (x + 2, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _note_font(width: int) -> tuple[float, int, int]:
    """(scale, character width, line height) of the note's font for a band ``width`` px wide."""
    import cv2

    scale = max(0.4, min(1.0, width / 900))
    (char_w, line_h), _ = cv2.getTextSize("M", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return scale, char_w, line_h + 6


def note_lines(text: str, width: int) -> list[str]:
    """``text`` wrapped to a band ``width`` px wide."""
    _, char_w, _ = _note_font(width)
    per_line = max(8, (width - 8) // max(char_w, 1))
    lines = [""]
    for word in text.split():
        if lines[-1] and len(lines[-1]) + 1 + len(word) > per_line:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return lines


def note_band_height(lines: list[str], width: int) -> int:
    return _note_font(width)[2] * len(lines) + 4 if lines else 0


def draw_note(band: np.ndarray, lines: list[str]) -> None:
    """Writes the note's ``lines`` in white on ``band`` (an H×W×3 uint8 black band, in place): what the policy
    did, shown on the node's preview above the picture."""
    import cv2

    scale, _, step = _note_font(band.shape[1])
    for k, line in enumerate(lines):
        cv2.putText(band, line, (4, step * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
