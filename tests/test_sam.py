"""Segment Anything: architecture read from the weights, safe loading, one image embedding per image."""

import numpy as np
import pytest
import torch
from image_alchemy.alchemy import sam as sam_ops
from tiny_models import detectors as tiny_detectors


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)


def test_tiny_checkpoint_loads_with_its_own_architecture(tiny_sam):
    model = sam_ops.load_sam(tiny_sam)
    assert model.variant == "custom" and not model.training
    assert model.spec.depth == 1 and model.spec.global_attn_indexes == () and model.spec.num_heads == 2
    assert model.spec.window_size == 14 and model.spec.out_chans == 32
    reference = tiny_detectors.tiny_sam().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_full_size_released_sams_are_recognised_from_their_shapes(name):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only: no 90–640 M parameter allocation
        state = sam_model_registry[name](checkpoint=None).state_dict()
    spec = sam_ops.infer_spec(state)
    assert spec == sam_ops.RELEASED[name]
    assert sam_ops.released_name(spec) == name


def test_pickled_objects_are_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": np.random.default_rng(0)}, evil)
    with pytest.raises(Exception, match="[Ww]eights only"):
        sam_ops.load_sam(evil)


def test_not_a_sam_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match="not a Segment Anything checkpoint"):
        sam_ops.load_sam(other)


def test_all_boxes_share_one_image_embedding(tiny_sam, image):
    model = sam_ops.load_sam(tiny_sam)
    calls = []
    model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 50.0, 35.0], [30.0, 10.0, 56.0, 40.0]])
    masks, iou = sam_ops.segment_boxes(model, image, boxes)
    assert len(calls) == 1
    assert masks.shape == (3, 3, 40, 56) and masks.dtype == torch.bool and iou.shape == (3, 3)
    # Decoding each box alone from the same embedding gives the same masks as the batch.
    single, _ = sam_ops.segment_boxes(model, image, boxes[1:2])
    assert torch.equal(single[0], masks[1])


def test_no_boxes_skips_the_encoder(tiny_sam, image):
    model = sam_ops.load_sam(tiny_sam)
    calls = []
    model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    masks, iou = sam_ops.segment_boxes(model, image, torch.zeros(0, 4))
    assert calls == [] and masks.shape == (0, 3, 40, 56)


@pytest.mark.parametrize("kind,label", [("hq", "SAM-HQ"), ("mobile", "MobileSAM / TinyViT")])
def test_sam_hq_and_mobile_sam_are_recognised_and_refused_by_name(tmp_path, kind, label):
    # Under a neutral name, so the keys (not the name) are what is recognised.
    path = tiny_detectors.write_sam_variant(tmp_path / "renamed.pth", kind)
    with pytest.raises(sam_ops.UnsupportedSam, match=f"'renamed.pth' is a {label} checkpoint.*sam_vit_h_4b8939.pth"):
        sam_ops.load_sam(path)
    assert sam_ops.unsupported_kind(tiny_detectors.tiny_sam().state_dict()) is None


@pytest.mark.parametrize(
    "name,kind",
    [
        ("sam_hq_vit_h.pth", "SAM-HQ"),
        ("sam_hq_vit_tiny.pth", "SAM-HQ"),
        ("mobile_sam.pt", "MobileSAM / TinyViT"),
        ("sam_vit_h_4b8939.pth", None),
        ("sam_vit_b_01ec64.pth", None),
    ],
)
def test_release_file_names_tell_the_unsupported_ones(name, kind):
    assert sam_ops.unsupported_by_name(name) == kind
