"""Grounded SAM over an image batch: text → boxes (GroundingDINO) → SAM hypotheses → M* per box → one mask.

Every input image gets exactly one mask, also when nothing is detected or SAM returns only empty hypotheses for
every box (the caller's policy decides what; the result's ``note`` says which happened, for the preview).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import grounding, masks as mask_ops, mask_select, sam as sam_ops

log = logging.getLogger(__name__)

ON_EMPTY = ("empty mask", "error", "whole image")


class NothingDetected(ValueError):
    """The prompt matched no box in an image and the policy is 'error'."""


@dataclass
class ImageResult:
    boxes: torch.Tensor            # N×4 pixel boxes above the threshold, most confident first
    scores: torch.Tensor           # N
    labels: list[str] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # boxes whose mask is in the union
    note: str = ""                 # what the policy did and why ("" when a mask was found)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One H×W×C float 0..1 image → H×W×3 uint8 RGB (alpha dropped), what both detectors expect."""
    return (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def segment_batch(images: torch.Tensor, detector: grounding.GroundingDino, sam: torch.nn.Module, prompt: str, *,
                  box_threshold: float, text_threshold: float, area_penalty: float, max_objects: int,
                  on_empty: str, grow: int = 0, feather: int = 0, device: torch.device | str = "cpu",
                  progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[ImageResult]]:
    """B×H×W×C images → B×H×W float masks (0..1) and what was found per image.

    The models must already be on ``device``. ``on_empty`` is one of ON_EMPTY.
    """
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    if not prompt.strip():
        raise ValueError("the text prompt is empty: name the subject to find, e.g. 'dog'.")
    batch, height, width = images.shape[:3]
    out = torch.zeros(batch, height, width)
    results = []
    for i in range(batch):
        rgb = to_uint8(images[i])
        found = grounding.detect(detector, rgb, prompt, box_threshold, text_threshold, device)
        result = ImageResult(found["boxes"], found["scores"], found["labels"])
        if len(result.boxes):
            # detect() sorts by score: the first max_objects boxes are the ones worth segmenting.
            top = slice(0, max_objects)
            hypotheses, _ = sam_ops.segment_boxes(sam, rgb, result.boxes[top])  # one image embedding, all boxes
            union, kept = mask_select.union_of_selected(hypotheses, result.boxes[top], result.scores[top],
                                                        area_penalty, max_objects)
            result.kept = kept
            out[i] = union.float()
        if not result.kept:
            where = f"in image {i + 1} of {batch}"
            if len(result.boxes):
                why = f"SAM returned only empty masks for the {min(len(result.boxes), max_objects)} box(es) {where}"
            else:
                why = f"nothing matching '{prompt}' {where} at box threshold {box_threshold:g}"
            if on_empty == "error":
                raise NothingDetected(why)
            log.warning("GroundedSAM: %s; using the %s policy.", why, on_empty)
            result.note = f"{why}: {on_empty} (if_nothing_found)"
            out[i] = 1.0 if on_empty == "whole image" else 0.0
        results.append(result)
        if progress is not None:
            progress(i + 1)
    if grow:
        out = mask_ops.grow_mask(out, grow)
    if feather:
        out = mask_ops.feather_mask(out, feather)
    return out.clamp_(0, 1), results


def draw_preview(images: torch.Tensor, masks: torch.Tensor, results: list[ImageResult]) -> torch.Tensor:
    """Images with the mask tinted and the boxes outlined (kept boxes green, the others grey), B×H×W×3."""
    import cv2

    previews = []
    tint = np.array([255, 64, 64], np.float32)
    for image, mask, result in zip(images, masks, results):
        rgb = to_uint8(image).astype(np.float32)
        alpha = 0.45 * mask.cpu().numpy()[..., None]
        canvas = np.ascontiguousarray((rgb * (1 - alpha) + tint * alpha).round().astype(np.uint8))
        thickness = max(1, round(min(canvas.shape[:2]) / 256))
        for j, box in enumerate(result.boxes.tolist()):
            colour = (64, 255, 64) if j in result.kept else (160, 160, 160)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
        if result.note:
            draw_note(canvas, result.note)
        previews.append(torch.from_numpy(canvas).float() / 255.0)
    return torch.stack(previews) if previews else images[..., :3].clone()


def draw_note(canvas: np.ndarray, text: str) -> None:
    """Writes ``text`` in white on a black band across the top of an H×W×3 uint8 image (in place), wrapped to the
    image width, so what the policy did shows on the node's preview."""
    import cv2

    height, width = canvas.shape[:2]
    scale = max(0.3, min(1.0, width / 900))
    (char_w, line_h), _ = cv2.getTextSize("M", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    per_line = max(8, (width - 8) // max(char_w, 1))
    words, lines = text.split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > per_line:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    step = line_h + 6
    canvas[:min(height, step * len(lines) + 4)] = 0
    for k, line in enumerate(lines):
        cv2.putText(canvas, line, (4, step * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
