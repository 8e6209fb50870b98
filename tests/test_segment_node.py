"""GroundedSAMMask and its loaders inside the real ComfyUI server, with tiny detectors in the model folders."""

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from image_alchemy.alchemy import grounded_sam, grounding
from image_alchemy.alchemy import sam as sam_ops
from PIL import Image
from support.graphs import tiny_scene
from tiny_models import detectors as tiny_detectors

HF_NAME, PTH_NAME, SAM_NAME = "grounding-dino-tiny-test", "groundingdino_tiny_test.pth", "sam_tiny_test.pth"


@pytest.fixture(scope="module")
def detectors(comfy):
    models = comfy.base_dir / "models"
    hf = tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / HF_NAME)
    pth = tiny_detectors.write_grounding_dino_original(models / "grounding-dino", hf, PTH_NAME)
    sam = tiny_detectors.write_sam(models / "sams" / SAM_NAME)
    return {"hf": hf, "pth": pth, "sam": sam}


def segment(g, image, model_name, **overrides):
    dino = g.node("ImageAlchemy_GroundingDinoLoader", model_name=model_name)
    sam = g.node("ImageAlchemy_SAMLoader", model_name=SAM_NAME)
    settings = dict(
        prompt="dog",
        box_threshold=0.0,
        text_threshold=0.0,
        area_penalty=0.1,
        max_objects=2,
        grow=0,
        feather=0,
        if_nothing_found="empty mask",
    )
    settings.update(overrides)
    return g.node("ImageAlchemy_GroundedSAMMask", image=image, grounding_dino=dino.out(0), sam=sam.out(0), **settings)


def save_mask(g, node, prefix):
    return g.node("SaveImage", images=g.node("MaskToImage", mask=node.out(0)).out(0), filename_prefix=prefix)


def test_loaders_list_both_layouts(comfy, detectors):
    info = comfy.object_info()
    dino_options = info["ImageAlchemy_GroundingDinoLoader"]["input"]["required"]["model_name"]
    # Other tests share this server's model folders, so check membership rather than the whole listing.
    listed = set(dino_options[1]["options"])
    assert {HF_NAME, PTH_NAME} <= listed
    assert not any("bert-base-uncased" in name for name in listed)  # the tokenizer folder is not a model
    assert SAM_NAME in info["ImageAlchemy_SAMLoader"]["input"]["required"]["model_name"][1]["options"]
    spec = info["ImageAlchemy_GroundedSAMMask"]
    assert spec["output"][:3] == ["MASK", "IMAGE", "MASK"]
    assert all(opt.get("tooltip") for _, opt in spec["input"]["required"].values() if isinstance(opt, dict))


def test_txt2img_batch_to_mask_and_preview(comfy, detectors):
    g = GraphBuilder()
    _, decoded = tiny_scene(g, batch_size=2)
    seg = segment(g, decoded.out(0), HF_NAME, max_objects=64)  # room for every box: no note band on the preview
    masks = save_mask(g, seg, "gsam_mask")
    preview = g.node("SaveImage", images=seg.out(1), filename_prefix="gsam_preview")
    entry = comfy.run(g.finalize())
    mask_images = comfy.output_images(entry, masks.id)
    previews = comfy.output_images(entry, preview.id)
    assert len(mask_images) == 2 and len(previews) == 2
    assert all(im.size == (64, 64) for im in mask_images)
    assert all(im.size == (256, 256) for im in previews)  # a 64 px picture, enlarged 4× for its tags to read
    # Threshold 0 detects every query: the preview shows box outlines (pure green or grey pixels).
    pixels = np.asarray(previews[0].convert("RGB")).reshape(-1, 3)
    assert ((pixels == [64, 255, 64]).all(1) | (pixels == [160, 160, 160]).all(1)).any()


@pytest.fixture(scope="module")
def two_images(comfy, detectors):
    """Two input images and a box threshold between their best scores: one has detections, the other none."""
    rng = np.random.default_rng(3)
    arrays = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(2)]
    detector = grounding.load_grounding_dino(detectors["hf"])
    best = [float(grounding.detect(detector, a, "dog", 0.0, 0.0)["scores"][0]) for a in arrays]
    assert best[0] != best[1]
    # Order the batch so the image WITHOUT detections comes first: its policy must not drop or shift the other.
    arrays = arrays if best[0] < best[1] else arrays[::-1]
    threshold = sum(best) / 2
    names = []
    for i, a in enumerate(arrays):
        names.append(f"gsam_input_{i}.png")
        Image.fromarray(a).save(comfy.base_dir / "input" / names[-1])
    images = torch.from_numpy(np.stack(arrays)).float() / 255.0
    expected, _ = grounded_sam.segment_batch(
        images,
        detector,
        sam_ops.load_sam(detectors["sam"]),
        "dog",
        box_threshold=threshold,
        text_threshold=0.0,
        area_penalty=0.1,
        max_objects=2,
        on_empty="empty mask",
    )
    assert expected[0].sum() == 0
    return {"names": names, "threshold": threshold, "expected": expected}


def batch_graph(two_images, policy, model_name=HF_NAME, threshold=None):
    g = GraphBuilder()
    loads = [g.node("LoadImage", image=name) for name in two_images["names"]]
    batch = g.node("ImageBatch", image1=loads[0].out(0), image2=loads[1].out(0))
    threshold = two_images["threshold"] if threshold is None else threshold
    seg = segment(g, batch.out(0), model_name, box_threshold=threshold, if_nothing_found=policy)
    return g, save_mask(g, seg, f"gsam_{policy.replace(' ', '_')}")


def read_masks(comfy, entry, node):
    return [
        torch.from_numpy(np.asarray(im.convert("L")).astype(np.float32) / 255.0)
        for im in comfy.output_images(entry, node.id)
    ]


@pytest.mark.parametrize("policy", ["empty mask", "whole image"])
def test_batch_with_one_empty_image_keeps_its_size_and_follows_the_policy(comfy, two_images, policy):
    g, save = batch_graph(two_images, policy)
    masks = read_masks(comfy, comfy.run(g.finalize()), save)
    assert len(masks) == 2
    assert torch.all(masks[0] == (1.0 if policy == "whole image" else 0.0))
    # The image with detections gets exactly the mask the pure pipeline computes in this process.
    assert torch.equal(masks[1], two_images["expected"][1])


def test_error_policy_stops_the_prompt_with_a_fix(comfy, two_images):
    # Through the original-checkpoint loader (its processor works at 800 px, so its scores differ from the
    # folder's): a threshold above 1 finds nothing in the first image.
    g, _ = batch_graph(two_images, "error", model_name=PTH_NAME, threshold=1.01)
    with pytest.raises(PromptFailed, match="GroundedSAMMask: nothing matching 'dog' in image 1 of 2.*box_threshold"):
        comfy.run(g.finalize())
    assert comfy.alive()


def test_missing_weights_name_the_folder_and_file(comfy, detectors):
    g = GraphBuilder()
    dino = g.node("ImageAlchemy_GroundingDinoLoader", model_name="groundingdino_swint_ogc.pth")
    sam = g.node("ImageAlchemy_SAMLoader", model_name="sam_vit_h_4b8939.pth")
    image = g.node("EmptyImage", width=64, height=64, batch_size=1, color=0)
    seg = g.node(
        "ImageAlchemy_GroundedSAMMask",
        image=image.out(0),
        grounding_dino=dino.out(0),
        sam=sam.out(0),
        prompt="dog",
        box_threshold=0.3,
        text_threshold=0.25,
        area_penalty=0.1,
        max_objects=1,
        grow=0,
        feather=0,
        if_nothing_found="empty mask",
    )
    save_mask(g, seg, "never")
    with pytest.raises(PromptFailed) as failure:
        comfy.run(g.finalize())
    message = str(failure.value.details)
    assert "groundingdino_swint_ogc.pth" in message and "'grounding-dino' model folder" in message
    assert "sam_vit_h_4b8939.pth" in message and "'sams' model folder" in message


@pytest.fixture(scope="module")
def empty_sams(comfy, detectors):
    """SAMs whose hypotheses 1 and 2 (or all three) are always empty."""
    sams = comfy.base_dir / "models" / "sams"
    return {
        "two": tiny_detectors.write_sam(sams / "sam_two_empty.pth", empty_hypotheses=(1, 2)),
        "all": tiny_detectors.write_sam(sams / "sam_all_empty.pth", empty_hypotheses=(0, 1, 2)),
    }


def test_empty_sam_hypotheses_are_never_chosen(comfy, detectors, empty_sams):
    """With a large λ every real hypothesis scores below the 0 of an empty one; the rule keeps the non-empty."""
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(comfy.base_dir / "input" / "gsam_empty_hyp.png")
    detector = grounding.load_grounding_dino(detectors["hf"])
    box = grounding.detect(detector, rgb, "dog", 0.0, 0.0)["boxes"][:1]
    hypotheses, _ = sam_ops.segment_boxes(sam_ops.load_sam(empty_sams["two"]), rgb, box)
    from image_alchemy.alchemy import mask_select

    assert [bool(h.any()) for h in hypotheses[0]] == [True, False, False]
    assert mask_select.selection_scores(hypotheses[0], box[0], 10.0)[0] < 0  # the plain argmax picks an empty one
    g = GraphBuilder()
    image = g.node("LoadImage", image="gsam_empty_hyp.png")
    seg = segment(g, image.out(0), HF_NAME, area_penalty=10.0, max_objects=1)
    seg.set_input("sam", g.node("ImageAlchemy_SAMLoader", model_name="sam_two_empty.pth").out(0))
    save = save_mask(g, seg, "gsam_two_empty")
    entry = comfy.run(g.finalize())
    mask = read_masks(comfy, entry, save)[0]
    assert torch.equal(mask > 0.5, hypotheses[0, 0])
    assert "if_nothing_found" not in entry["outputs"][seg.id]["text"][0]  # only the several-found note


@pytest.mark.parametrize("policy", ["whole image", "empty mask"])
def test_only_empty_hypotheses_apply_the_policy_and_say_so_on_the_node(comfy, detectors, empty_sams, policy):
    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    seg = segment(g, decoded.out(0), HF_NAME, if_nothing_found=policy)
    seg.set_input("sam", g.node("ImageAlchemy_SAMLoader", model_name="sam_all_empty.pth").out(0))
    save = save_mask(g, seg, "gsam_all_empty")
    entry = comfy.run(g.finalize())
    assert torch.all(read_masks(comfy, entry, save)[0] == (1.0 if policy == "whole image" else 0.0))
    text = entry["outputs"][seg.id]["text"][0]
    assert "SAM returned only empty masks" in text and policy in text
    # The preview on the node carries the note: a black band with white text across the top.
    shown = np.asarray(comfy.output_images(entry, seg.id)[0].convert("RGB")).astype(int)
    band = shown[:12]
    assert (band.max(-1) == 0).mean() > 0.5 and band.max() > 150

    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    seg = segment(g, decoded.out(0), HF_NAME, if_nothing_found="error")
    seg.set_input("sam", g.node("ImageAlchemy_SAMLoader", model_name="sam_all_empty.pth").out(0))
    save_mask(g, seg, "never")
    with pytest.raises(PromptFailed, match="GroundedSAMMask: SAM returned only empty masks"):
        comfy.run(g.finalize())


def test_two_phrases_give_a_mask_batch_in_prompt_order_and_mask_from_batch_picks_one(comfy, detectors):
    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    both = segment(g, decoded.out(0), HF_NAME, prompt="dog . cat", max_objects=1, order_by="left to right")
    cat = segment(g, decoded.out(0), HF_NAME, prompt="cat", max_objects=1, order_by="left to right")
    picked = g.node("ImageAlchemy_MaskFromBatch", masks=both.out(2), index=1, if_missing="error")
    saves = {
        name: g.node(
            "SaveImage",
            images=g.node("MaskToImage", mask=node.out(slot)).out(0),
            filename_prefix=f"gsam_phrases_{name}",
        )
        for name, node, slot in (("batch", both, 2), ("picked", picked, 0), ("cat", cat, 0))
    }
    entry = comfy.run(g.finalize())
    batch = read_masks(comfy, entry, saves["batch"])
    assert len(batch) == 2  # [dog, cat]
    cat_alone = read_masks(comfy, entry, saves["cat"])[0]
    assert torch.equal(batch[1], cat_alone) and torch.equal(read_masks(comfy, entry, saves["picked"])[0], cat_alone)
    outputs = comfy.object_info()["ImageAlchemy_GroundedSAMMask"]["output"]
    assert outputs[:3] == ["MASK", "IMAGE", "MASK"]
    import comfy_api.latest as latest

    assert (outputs[3:] == ["BOUNDING_BOX"]) == hasattr(latest.io, "BoundingBox")


@pytest.mark.skipif(
    not hasattr(__import__("comfy_api.latest", fromlist=["io"]).io, "BoundingBox"),
    reason="this ComfyUI has no BOUNDING_BOX type (0.3.75)",
)
def test_bboxes_output_is_comfy_bounding_box_per_image(comfy, detectors):
    import json

    g = GraphBuilder()
    _, decoded = tiny_scene(g, batch_size=2)
    seg = segment(g, decoded.out(0), HF_NAME, prompt="dog . cat", max_objects=1)
    shown = g.node("PreviewAny", source=seg.out(3))
    entry = comfy.run(g.finalize())
    boxes = json.loads(entry["outputs"][shown.id]["text"][0])
    assert len(boxes) == 2  # one list per image
    for frame in boxes:
        assert 1 <= len(frame) <= 2 and [b["label"] for b in frame] == sorted(
            (b["label"] for b in frame), key=["dog", "cat"].index
        )
        for box in frame:
            assert {"x", "y", "width", "height", "score"} <= set(box)
            assert 0 <= box["x"] <= box["x"] + box["width"] <= 64 and 0 <= box["y"] <= box["y"] + box["height"] <= 64


def test_mask_from_batch_out_of_range_follows_its_policy(comfy, detectors):
    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    seg = segment(g, decoded.out(0), HF_NAME, prompt="dog", max_objects=1)
    empty = g.node("ImageAlchemy_MaskFromBatch", masks=seg.out(2), index=3, if_missing="empty mask")
    save = g.node("SaveImage", images=g.node("MaskToImage", mask=empty.out(0)).out(0), filename_prefix="gsam_pick")
    entry = comfy.run(g.finalize())
    mask = read_masks(comfy, entry, save)
    assert len(mask) == 1 and mask[0].shape == (64, 64) and mask[0].sum() == 0
    empty.set_input("if_missing", "error")
    with pytest.raises(PromptFailed, match="MaskFromBatch: the batch has 1 mask"):
        comfy.run(g.finalize())


def test_several_found_error_policy_names_the_fix(comfy, detectors):
    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    seg = segment(g, decoded.out(0), HF_NAME, max_objects=1, if_several_found="error")
    save_mask(g, seg, "never")
    with pytest.raises(PromptFailed, match="GroundedSAMMask: 'dog': .* but max_objects is 1. Raise max_objects"):
        comfy.run(g.finalize())


def test_sam_hq_and_mobile_sam_files_are_not_listed_and_say_why(comfy, detectors):
    sams = comfy.base_dir / "models" / "sams"
    tiny_detectors.write_sam_variant(sams / "sam_hq_vit_b.pth", "hq")
    tiny_detectors.write_sam_variant(sams / "mobile_sam.pt", "mobile")
    tiny_detectors.write_sam_variant(sams / "my_sam_finetune.pth", "hq")  # a name that does not tell
    options = comfy.object_info()["ImageAlchemy_SAMLoader"]["input"]["required"]["model_name"][1]["options"]
    assert SAM_NAME in options and "my_sam_finetune.pth" in options
    assert "sam_hq_vit_b.pth" not in options and "mobile_sam.pt" not in options
    for name, message in (
        ("sam_hq_vit_b.pth", "'sam_hq_vit_b.pth' is a SAM-HQ checkpoint"),
        ("mobile_sam.pt", "'mobile_sam.pt' is a MobileSAM / TinyViT checkpoint"),
        ("my_sam_finetune.pth", "SAMLoader: 'my_sam_finetune.pth' is a SAM-HQ checkpoint"),
    ):
        g = GraphBuilder()
        _, decoded = tiny_scene(g)
        seg = segment(g, decoded.out(0), HF_NAME)
        seg.set_input("sam", g.node("ImageAlchemy_SAMLoader", model_name=name).out(0))
        save_mask(g, seg, "never")
        with pytest.raises(PromptFailed, match=message + ".*sam_vit_h_4b8939.pth"):
            comfy.run(g.finalize())


def test_a_per_object_mask_batch_into_the_blur_points_to_mask_from_batch(comfy, detectors):
    """One image, three masks (one per phrase, as SAM3_Detect's individual masks give one per object): DecayBlur
    cannot tell which is meant and says how to pick one; through Mask From Batch the same batch blurs."""
    g = GraphBuilder()
    _, decoded = tiny_scene(g)
    seg = segment(g, decoded.out(0), HF_NAME, prompt="dog . cat . toy", max_objects=1)
    blur = g.node(
        "ImageAlchemy_DecayBlur",
        image=decoded.out(0),
        mask=seg.out(2),
        mode="gaussian",
        kernel_size=5,
        sigma=2.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    g.node("SaveImage", images=blur.out(0), filename_prefix="never")
    with pytest.raises(
        PromptFailed, match="DecayBlur: the mask batch has 3 masks but the image batch has 1.*Mask From Batch"
    ):
        comfy.run(g.finalize())
    blur.set_input("mask", g.node("ImageAlchemy_MaskFromBatch", masks=seg.out(2), index=2, if_missing="error").out(0))
    entry = comfy.run(g.finalize())
    assert entry["status"]["status_str"] == "success"
