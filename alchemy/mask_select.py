"""The paper's mask choice among SAM's hypotheses (paper 001 §3.3.2 eq. 3; docs/DESIGN.md §4.4), and their union.

    M* = argmax_i  IoU(M_i, B) − λ·|M_i|

B is the detection box as a filled region, |M_i| the mask's area as a fraction of the image: λ trades
agreement with the box against size, so a larger λ prefers the tighter hypothesis (the subject rather than
the subject plus its surroundings). The argmax runs over the NON-EMPTY hypotheses only: an empty mask scores
0 − 0 = 0 and would otherwise win whenever λ pushes the real ones below zero, silently dropping the subject.
"""

from __future__ import annotations

import torch


def box_region(box: torch.Tensor | tuple, height: int, width: int, device=None) -> torch.Tensor:
    """Filled H×W bool region of an x0 y0 x1 y1 pixel box: the pixels whose centres lie inside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    rows = (ys >= y0) & (ys <= y1)
    cols = (xs >= x0) & (xs <= x1)
    return rows[:, None] & cols[None, :]


def iou(masks: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """IoU of each of K masks (K×H×W bool) with one H×W bool region; 0 where both are empty."""
    masks = masks.bool()
    inter = (masks & region).flatten(1).sum(1).float()
    union = (masks | region).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def selection_scores(masks: torch.Tensor, box, lam: float) -> torch.Tensor:
    """IoU(M_i, B) − λ|M_i| for each of the K hypotheses (K×H×W) of one box."""
    height, width = masks.shape[-2:]
    area = masks.bool().flatten(1).sum(1).float() / float(height * width)
    return iou(masks, box_region(box, height, width, masks.device)) - lam * area


def select_mask(masks: torch.Tensor, box, lam: float) -> int | None:
    """Index of M* among the non-empty ones of the K hypotheses of one box (the first one on a tie); None when
    every hypothesis is empty."""
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ValueError(f"select_mask: expected K×H×W hypotheses with K ≥ 1, got shape {tuple(masks.shape)}")
    non_empty = masks.bool().flatten(1).any(1)
    if not non_empty.any():
        return None
    scores = selection_scores(masks, box, lam).masked_fill(~non_empty, -torch.inf)
    return int(torch.argmax(scores))


def union_of_selected(
    masks: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, lam: float, max_objects: int
) -> tuple[torch.Tensor, list[int]]:
    """Union of M* over the ``max_objects`` most confident boxes (``select_instances`` by score)."""
    return select_instances(masks, boxes, scores, lam, max_objects, "most confident")


# Which detections of a phrase go into its mask: the first ``max_objects`` in one of these orders.
ORDERS = ("most confident", "left to right", "top to bottom", "largest", "smallest")


def order_boxes(boxes: torch.Tensor, scores: torch.Tensor, order: str) -> list[int]:
    """Indices of the N boxes (N×4, x0 y0 x1 y1) in ``order``.

    "most confident": detection score, highest first; "left to right" / "top to bottom": the box centre's x / y,
    smallest first; "largest" / "smallest": the box area. Ties go to the more confident box, then the earlier one,
    so the order is always the same for the same detections.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != scores.shape[0]:
        raise ValueError(
            f"order_boxes: {tuple(boxes.shape)} boxes and {tuple(scores.shape)} scores do not describe the same boxes"
        )
    b = boxes.float().tolist()
    s = scores.float().tolist()
    keys = {
        "most confident": lambda i: 0.0,
        "left to right": lambda i: (b[i][0] + b[i][2]) / 2,
        "top to bottom": lambda i: (b[i][1] + b[i][3]) / 2,
        "largest": lambda i: -(b[i][2] - b[i][0]) * (b[i][3] - b[i][1]),
        "smallest": lambda i: (b[i][2] - b[i][0]) * (b[i][3] - b[i][1]),
    }
    key = keys[order]
    return sorted(range(len(b)), key=lambda i: (key(i), -s[i], i))


def union_of_chosen(masks: torch.Tensor, boxes: torch.Tensor, lam: float) -> tuple[torch.Tensor, list[int]]:
    """Union of M* over chosen boxes: ``masks`` N×K×H×W (hypotheses per box), ``boxes`` N×4. Returns the H×W
    bool mask and the rows kept; a box whose hypotheses are all empty is not kept (and not replaced by the next
    one: the preview shows it dropped)."""
    if masks.ndim != 4 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"union_of_chosen: {tuple(masks.shape)} masks and {tuple(boxes.shape)} boxes do not describe the same boxes"
        )
    union = torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
    kept = []
    for i in range(masks.shape[0]):
        choice = select_mask(masks[i], boxes[i], lam)
        if choice is not None:
            union |= masks[i, choice].bool()
            kept.append(i)
    return union, kept


def select_instances(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    lam: float,
    max_objects: int,
    order: str = "most confident",
) -> tuple[torch.Tensor, list[int]]:
    """Union of M* over the first ``max_objects`` boxes in ``order`` (see ``order_boxes``).

    ``masks`` N×K×H×W (hypotheses per box), ``boxes`` N×4, ``scores`` N detection scores. Returns the H×W bool
    mask and the indices of the boxes kept, in that order.
    """
    if masks.ndim != 4 or masks.shape[0] != boxes.shape[0] or boxes.shape[0] != scores.shape[0]:
        raise ValueError(
            f"select_instances: {tuple(masks.shape)} masks, {tuple(boxes.shape)} boxes and "
            f"{tuple(scores.shape)} scores do not describe the same boxes"
        )
    if max_objects < 1:
        raise ValueError(f"select_instances: max_objects must be ≥ 1, got {max_objects}")
    picks = order_boxes(boxes, scores, order)[:max_objects]
    union, rows = union_of_chosen(masks[picks], boxes[picks], lam)
    return union, [picks[r] for r in rows]
