"""Photos of different sizes reach the trainer as taken, through the real server: three LoadImage photos of three
sizes and aspects (one with the subject at the very edge of a wide photo) through Photo List train with each
photo's own size in its SDXL time ids and the subject kept whole in its crop; the same photos batched the old way
(ImageBatch, which rescales them to the first one's size) still train, and the node says they were rescaled; masks
that do not match the photos in count stop the prompt with an error that says so."""

import json

import numpy as np
import pytest
import websocket
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from PIL import Image
from safetensors import safe_open
from support.training_graphs import BASE, QUICK, TRAIN

# (height, width, subject box top, bottom, left, right): 1:1, 3:1 with the subject at its left edge, 2.5:1.
PHOTOS = {
    "list_square.png": (240, 240, 80, 160, 90, 150),
    "list_wide_edge.png": (128, 384, 40, 90, 0, 40),
    "list_wide.png": (144, 360, 50, 100, 160, 220),
}
RESOLUTION = 256
WIDE_BUCKET = (160, 384)  # 256's 2.4:1 bucket (SDXL's 1536×640): two of the three photos are nearest to it


@pytest.fixture(scope="module")
def photos(comfy):
    """The subject is pure red and the background has no red, so core ImageToMask(red) gives its mask."""
    rng = np.random.default_rng(0)
    for name, (h, w, top, bottom, left, right) in PHOTOS.items():
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 1:] = rng.integers(40, 200, (h, w, 2))
        rgb[top:bottom, left:right] = (255, 0, 0)
        Image.fromarray(rgb).save(comfy.base_dir / "input" / name)
    return list(PHOTOS)


def _train(g, images, mask, lora_name):
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    values = {**BASE, **QUICK, "steps": 1, "batch_size": 3, "resolution": RESOLUTION, "lora_name": lora_name}
    return g.node(TRAIN, model=loader.out(0), clip=loader.out(1), vae=loader.out(2), images=images, mask=mask, **values)


def _run_collecting_warnings(comfy, g) -> list[str]:
    """Runs the graph; returns the warnings the training node showed (its progress events)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=300)
    warnings = []
    try:
        prompt_id = comfy.queue(g.finalize())
        while True:
            message = ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            if event["type"] == "image_alchemy.train_progress" and event["data"]["phase"] == "warning":
                warnings.append(event["data"]["text"])
            if event["type"] in ("executing", "execution_error") and event["data"].get("prompt_id") == prompt_id:
                if event["type"] == "execution_error" or event["data"].get("node") is None:
                    break
    finally:
        ws.close()
    comfy.wait(prompt_id)
    return warnings


def _crops(comfy, lora_name):
    with safe_open(str(comfy.base_dir / "models" / "loras" / f"{lora_name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
    return json.loads(meta["image_alchemy.photo_crops"]), meta["ss_resolution"]


def test_photos_of_three_sizes_reach_the_trainer_each_at_its_own_size(comfy, photos):
    g = GraphBuilder()
    loads = [g.node("LoadImage", image=name) for name in photos]
    photo_list = g.node("ImageAlchemy_PhotoList", **{f"image_{i + 1}": load.out(0) for i, load in enumerate(loads)})
    masks = g.node("ImageToMask", image=photo_list.out(0), channel="red")  # runs once per photo: a list of masks
    _train(g, photo_list.out(0), masks.out(0), "photo_list_sizes")
    assert _run_collecting_warnings(comfy, g) == [""]  # nothing to warn about

    crops, resolution = _crops(comfy, "photo_list_sizes")
    assert resolution == f"({WIDE_BUCKET[1]}, {WIDE_BUCKET[0]})"
    for (h, w, top, bottom, left, right), crop in zip(PHOTOS.values(), crops):
        orig_h, orig_w, crop_top, crop_left, bucket_h, bucket_w = crop
        assert (orig_h, orig_w) == (h, w)  # each photo's own size, not the first one's
        assert (bucket_h, bucket_w) == WIDE_BUCKET
        scale = max(bucket_h / h, bucket_w / w)  # covers the bucket, aspect kept
        # The subject's box (resized) lies inside the crop.
        assert crop_top <= top * scale and bottom * scale <= crop_top + bucket_h
        assert crop_left <= left * scale and right * scale <= crop_left + bucket_w
    # The 3:1 photo: a centre cut would have started at 48 px and lost the subject at its left edge.
    assert crops[1][3] == 0 and (round(384 * 1.25) - 384) // 2 == 48


def test_the_old_batch_wiring_still_trains_and_the_node_says_the_photos_were_rescaled(comfy, photos):
    g = GraphBuilder()
    loads = [g.node("LoadImage", image=name) for name in photos]
    batch = loads[0].out(0)
    for load in loads[1:]:
        batch = g.node("ImageBatch", image1=batch, image2=load.out(0)).out(0)
    masks = g.node("ImageToMask", image=batch, channel="red")
    _train(g, batch, masks.out(0), "photo_batch_old")
    warnings = _run_collecting_warnings(comfy, g)
    assert len(warnings) == 1 and "photo 2, 3 of the batch was rescaled" in warnings[0] and "Photo List" in warnings[0]

    crops, resolution = _crops(comfy, "photo_batch_old")
    assert resolution == "(256, 256)"  # ImageBatch made them all 240², so the square bucket
    assert [crop[:2] for crop in crops] == [[240, 240]] * 3


def test_masks_and_photos_of_different_counts_stop_with_an_error_that_says_so(comfy, photos):
    g = GraphBuilder()
    loads = [g.node("LoadImage", image=name) for name in photos]
    three = g.node("ImageAlchemy_PhotoList", **{f"image_{i + 1}": load.out(0) for i, load in enumerate(loads)})
    two = g.node("ImageAlchemy_PhotoList", image_1=loads[0].out(0), image_2=loads[1].out(0))
    _train(g, three.out(0), g.node("ImageToMask", image=two.out(0), channel="red").out(0), "photo_mask_count")
    with pytest.raises(PromptFailed, match=r"2 masks for 3 photos: give one mask per photo"):
        comfy.run(g.finalize(), timeout=300)
    assert not (comfy.base_dir / "models" / "loras" / "photo_mask_count.safetensors").exists()
