"""GroundedSAM's instance choice on the tiny detectors (real GroundingDINO and SAM architectures): each phrase of a
prompt gets its own mask, order_by picks the box it documents, and the several-found policy is explicit."""

import numpy as np
import pytest
import torch
from image_alchemy.alchemy import grounded_sam, grounding, mask_select
from image_alchemy.alchemy import sam as sam_ops


@pytest.fixture(scope="module")
def models(tiny_grounding_dino, tiny_sam):
    return grounding.load_grounding_dino(tiny_grounding_dino["hf"]), sam_ops.load_sam(tiny_sam)


@pytest.fixture(scope="module")
def image():
    rgb = (np.random.default_rng(5).random((48, 64, 3)) * 255).astype(np.uint8)
    return rgb, torch.from_numpy(rgb).float()[None] / 255.0


def run(models, image, prompt, **settings):
    detector, sam = models
    options = dict(box_threshold=0.0, text_threshold=0.0, area_penalty=0.1, max_objects=1, on_empty="empty mask")
    options.update(settings)
    return grounded_sam.segment_batch(image[1], detector, sam, prompt, **options)


def test_two_phrases_give_two_masks_each_as_if_asked_alone(models, image):
    union, (result,) = run(models, image, "dog . cat", max_objects=2)
    assert result.phrase_masks.shape == (2, 48, 64)
    for j, phrase in enumerate(["dog", "cat"]):
        alone, (single,) = run(models, image, phrase, max_objects=2)
        assert alone[0].sum() > 0
        assert torch.equal(result.phrase_masks[j], alone[0])
        assert torch.equal(single.phrase_masks[0], alone[0])
    assert torch.equal(union[0], result.phrase_masks.amax(0))
    assert not torch.equal(result.phrase_masks[0], result.phrase_masks[1])  # the two phrases found different boxes
    # The batch output: image by image, phrases in prompt order; the kept boxes name their phrase.
    assert torch.equal(grounded_sam.phrase_mask_batch([result, result]), torch.cat([result.phrase_masks] * 2))
    labels = [box["label"] for box in grounded_sam.kept_boxes([result])[0]]
    assert set(labels) == {"dog", "cat"} and labels == sorted(labels, key=["dog", "cat"].index)


@pytest.mark.parametrize("order", mask_select.ORDERS)
def test_order_by_keeps_the_box_its_order_puts_first(models, image, order):
    detector, sam = models
    found = grounding.detect(detector, image[0], "dog", 0.0, 0.0)
    first = mask_select.order_boxes(found["boxes"], found["scores"], order)[0]
    mask, (result,) = run(models, image, "dog", order=order)
    assert result.picked == [first] and torch.equal(result.boxes, found["boxes"])
    hypotheses, _ = sam_ops.segment_boxes(sam, image[0], found["boxes"][first : first + 1])
    choice = mask_select.select_mask(hypotheses[0], found["boxes"][first], 0.1)
    if choice is None:  # the tiny SAM gives this box only empty hypotheses: dropped, and said so
        assert result.kept == [] and mask.sum() == 0 and "SAM returned only empty masks" in result.notes[-1]
    else:
        assert result.kept == [first] and torch.equal(mask[0] > 0.5, hypotheses[0, choice])
    # Several found, one kept: said on the result (and so on the preview's band), with the order used.
    n = len(found["boxes"])
    assert result.notes[0] == (
        f"'dog': {n} found in image 1 of 1, kept 1 ({order} first): use the first (if_several_found)"
    )


def test_orders_pick_different_boxes_on_the_tiny_detector(models, image):
    picked = {
        run(models, image, "dog", order=o)[1][0].picked[0]
        for o in ("left to right", "top to bottom", "largest", "smallest")
    }
    assert len(picked) >= 3  # the test above would pass trivially if every order picked the same box


def test_several_found_error_policy_stops_with_the_count(models, image):
    with pytest.raises(grounded_sam.SeveralDetected, match=r"'cat': \d+ found in image 1 of 1 but max_objects is 1"):
        run(models, image, "cat", on_several="error")
    # Enough room for every box: nothing to decide, no note.
    n = len(grounding.detect(models[0], image[0], "cat", 0.0, 0.0)["boxes"])
    _, (result,) = run(models, image, "cat", on_several="error", max_objects=n)
    assert result.notes == [] and len(result.kept) <= n


def test_a_phrase_that_finds_nothing_follows_if_nothing_found_alone(models, image):
    # Threshold above 1: neither phrase finds anything; each gets the policy, and both say so.
    _, (result,) = run(models, image, "dog . cat", box_threshold=1.01, on_empty="whole image")
    assert torch.all(result.phrase_masks == 1)
    assert [n.split(" in image")[0] for n in result.notes] == ["nothing matching 'dog'", "nothing matching 'cat'"]
    with pytest.raises(grounded_sam.NothingDetected, match="nothing matching 'dog'"):
        run(models, image, "dog . cat", box_threshold=1.01, on_empty="error")


def test_the_preview_tags_each_kept_box(models, image):
    n = len(grounding.detect(models[0], image[0], "dog", 0.0, 0.0)["boxes"])
    masks, results = run(models, image, "dog", max_objects=n)  # all kept: no band over the tags
    assert results[0].kept and results[0].notes == []
    plain = grounded_sam.draw_preview(image[1], masks, [grounded_sam.ImageResult(results[0].boxes, results[0].scores)])
    tagged = grounded_sam.draw_preview(image[1], masks, results)
    colour = torch.tensor([64, 255, 64])
    is_tag = lambda p: ((p[0] * 255).round().int() == colour).all(-1)
    assert is_tag(tagged).sum() > is_tag(plain).sum() + 20  # the "dog 1", "dog 2", … tags' background


def test_the_note_band_sits_above_a_small_picture_and_never_covers_it(models, image):
    masks, results = run(models, image, "dog")  # max_objects 1 of many boxes: a note
    assert results[0].notes
    quiet = grounded_sam.ImageResult(results[0].boxes, results[0].scores, results[0].labels, results[0].picked,
                                     results[0].kept, results[0].ranks)  # fmt: skip
    with_note = grounded_sam.draw_preview(image[1], masks, results)[0]
    without = grounded_sam.draw_preview(image[1], masks, [quiet])[0]
    # 48×64 enlarged 6× (short side ≥ 256), the band on top of it: the picture below is the note-free preview.
    assert without.shape == (288, 384, 3)
    band = with_note.shape[0] - 288
    assert band >= 20 and with_note.shape[1] == 384
    assert torch.equal(with_note[band:], without)
    assert (with_note[:band] == 0).float().mean() > 0.5 and with_note[:band].max() > 0.6  # white text on black
    # A batch shares one band height; an image without a note gets a plain black band.
    both = grounded_sam.draw_preview(torch.cat([image[1]] * 2), torch.cat([masks] * 2), [results[0], quiet])
    assert both.shape == (2, 288 + band, 384, 3) and torch.all(both[1, :band] == 0)


def test_phrases_split_on_periods():
    assert grounding.phrases("dog . cat") == ["dog", "cat"]
    assert grounding.phrases(" red ball.  . a cat ") == ["red ball", "a cat"]
    assert grounding.phrases(" . ") == []
