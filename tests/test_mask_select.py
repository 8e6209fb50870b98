"""The paper's mask choice M* = argmax IoU(M_i, B) − λ|M_i| on hand-made masks whose answer is known."""

import pytest
import torch
from image_alchemy.alchemy import mask_select


def rect(h, w, top, left, bottom, right):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[top:bottom, left:right] = True
    return m


BOX = (2.0, 2.0, 6.0, 6.0)  # x0 y0 x1 y1: rows/cols 2..5 of a 10×10 image, 16 px
EXACT = rect(10, 10, 2, 2, 6, 6)  # IoU 1,      area 0.16
LOOSE = rect(10, 10, 1, 1, 8, 8)  # IoU 16/49,  area 0.49
HALF = rect(10, 10, 2, 2, 4, 6)  # IoU 0.5,    area 0.08
HYPOTHESES = torch.stack([LOOSE, EXACT, HALF])


def test_box_region_takes_pixels_whose_centres_are_inside():
    region = mask_select.box_region((1.0, 1.0, 3.0, 3.0), 5, 5)
    assert region.sum() == 4 and region[1:3, 1:3].all()
    assert torch.equal(mask_select.box_region(BOX, 10, 10), EXACT)


def test_scores_are_iou_minus_lambda_times_area_fraction():
    scores = mask_select.selection_scores(HYPOTHESES, BOX, lam=0.5)
    expected = torch.tensor([16 / 49 - 0.5 * 0.49, 1.0 - 0.5 * 0.16, 0.5 - 0.5 * 0.08])
    assert torch.allclose(scores, expected, atol=1e-6)


def test_zero_lambda_picks_best_iou_not_largest_mask():
    assert mask_select.select_mask(HYPOTHESES, BOX, lam=0.0) == 1


def test_lambda_switches_choice_exactly_where_the_formula_says():
    # EXACT beats HALF while 1 − 0.16λ > 0.5 − 0.08λ, i.e. λ < 6.25.
    assert mask_select.select_mask(HYPOTHESES, BOX, lam=6.2) == 1
    assert mask_select.select_mask(HYPOTHESES, BOX, lam=6.3) == 2


def test_area_is_a_fraction_of_the_image_not_pixels():
    # On a 100×100 image the same masks are tiny fractions: λ = 6.3 no longer flips the choice.
    big = torch.zeros(3, 100, 100, dtype=torch.bool)
    big[:, :10, :10] = HYPOTHESES
    assert mask_select.select_mask(big, BOX, lam=6.3) == 1


def test_union_keeps_the_most_confident_boxes():
    left = torch.stack([rect(10, 10, 0, 0, 4, 4)] * 3)
    right = torch.stack([rect(10, 10, 5, 5, 9, 9)] * 3)
    masks = torch.stack([left, right])
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]])
    scores = torch.tensor([0.4, 0.9])
    one, kept = mask_select.union_of_selected(masks, boxes, scores, lam=0.1, max_objects=1)
    assert kept == [1] and torch.equal(one, right[0])
    both, kept = mask_select.union_of_selected(masks, boxes, scores, lam=0.1, max_objects=5)
    assert kept == [1, 0] and torch.equal(both, left[0] | right[0])


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same boxes"):
        mask_select.union_of_selected(HYPOTHESES[None], torch.zeros(2, 4), torch.zeros(2), 0.1, 1)
    with pytest.raises(ValueError, match="max_objects"):
        mask_select.union_of_selected(HYPOTHESES[None], torch.zeros(1, 4), torch.zeros(1), 0.1, 0)
    with pytest.raises(ValueError, match="K ≥ 1"):
        mask_select.select_mask(torch.zeros(0, 4, 4, dtype=torch.bool), BOX, 0.1)


def test_empty_hypotheses_never_win_and_all_empty_gives_none():
    empty = torch.zeros(10, 10, dtype=torch.bool)
    # λ = 10: LOOSE scores 16/49 − 4.9 < 0, so an empty mask (score 0) would win the plain argmax.
    with_empty = torch.stack([empty, LOOSE, empty])
    assert mask_select.selection_scores(with_empty, BOX, lam=10.0).argmax() == 0
    assert mask_select.select_mask(with_empty, BOX, lam=10.0) == 1
    assert mask_select.select_mask(torch.stack([empty] * 3), BOX, lam=0.1) is None


def test_union_leaves_out_boxes_with_only_empty_hypotheses():
    empty = torch.zeros(3, 10, 10, dtype=torch.bool)
    right = torch.stack([rect(10, 10, 5, 5, 9, 9)] * 3)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]])
    union, kept = mask_select.union_of_selected(
        torch.stack([empty, right]), boxes, torch.tensor([0.9, 0.4]), lam=0.1, max_objects=2
    )
    assert kept == [1] and torch.equal(union, right[0])
    union, kept = mask_select.union_of_selected(
        torch.stack([empty, empty]), boxes, torch.tensor([0.9, 0.4]), lam=0.1, max_objects=2
    )
    assert kept == [] and not union.any()


# -- which detections: order policies and max_objects --------------------------------------------------------------

# Four boxes on a 20×20 image, chosen so every order gives a different first box:
#   0: right, low score, small        1: left, mid score, large
#   2: top, high score, medium        3: bottom, mid score (tie with 1), tiny
ORDER_BOXES = torch.tensor(
    [
        [15.0, 8.0, 19.0, 12.0],  # centre (17, 10), area 16
        [0.0, 4.0, 8.0, 14.0],  # centre (4, 9),   area 80
        [6.0, 0.0, 12.0, 5.0],  # centre (9, 2.5), area 30
        [9.0, 17.0, 11.0, 19.0],
    ]
)  # centre (10, 18), area 4
ORDER_SCORES = torch.tensor([0.2, 0.5, 0.9, 0.5])


@pytest.mark.parametrize(
    "order,expected",
    [
        ("most confident", [2, 1, 3, 0]),  # 1 and 3 tie: the earlier box first
        ("left to right", [1, 2, 3, 0]),  # centre x 4, 9, 10, 17
        ("top to bottom", [2, 1, 0, 3]),  # centre y 2.5, 9, 10, 18
        ("largest", [1, 2, 0, 3]),  # area 80, 30, 16, 4
        ("smallest", [3, 0, 2, 1]),
    ],
)
def test_each_order_sorts_as_documented(order, expected):
    assert mask_select.order_boxes(ORDER_BOXES, ORDER_SCORES, order) == expected


def test_ties_in_an_order_go_to_the_more_confident_box():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 10.0, 4.0, 14.0]])  # same centre x
    assert mask_select.order_boxes(boxes, torch.tensor([0.3, 0.8]), "left to right") == [1, 0]


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="order must be one of"):
        mask_select.order_boxes(ORDER_BOXES, ORDER_SCORES, "random")


def box_hypotheses(boxes, size=20):
    """For each box three hypotheses: the box itself, and two larger (whole image) ones."""
    out = []
    for x0, y0, x1, y1 in boxes.int().tolist():
        exact = rect(size, size, y0, x0, y1, x1)
        out.append(torch.stack([exact, torch.ones(size, size, dtype=torch.bool), exact | rect(size, size, 0, 0, 2, 2)]))
    return torch.stack(out)


@pytest.mark.parametrize("order", mask_select.ORDERS)
def test_select_instances_keeps_the_first_boxes_of_the_order(order):
    masks = box_hypotheses(ORDER_BOXES)
    expected = mask_select.order_boxes(ORDER_BOXES, ORDER_SCORES, order)
    for n in (1, 2):
        union, kept = mask_select.select_instances(masks, ORDER_BOXES, ORDER_SCORES, 0.1, n, order)
        assert kept == expected[:n]
        want = torch.zeros(20, 20, dtype=torch.bool)
        for i in kept:
            want |= masks[i, 0]  # M* of a box is the exact one (IoU 1, smallest area)
        assert torch.equal(union, want)
