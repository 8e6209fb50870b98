"""Subject-aware crops and SDXL aspect buckets, in the node's and `fit`'s own preprocessing and through the
server: a subject at the edge of a wide photo stays whole in the crop (a centre cut would lose it), a 3:2 photo
trains at the 3:2-ish bucket with time-ids that say so."""

import numpy as np
import pytest
import torch
from image_alchemy.training.families import family_named
from image_alchemy.training.preprocess import buckets, plan_crop
from PIL import Image
from safetensors import safe_open


@pytest.fixture(scope="module")
def node(tiny_models):
    from image_alchemy.nodes import train

    return train


def test_buckets_are_sdxls_at_1024_and_scale_to_multiples_of_32():
    assert buckets(1024) == [(h, w) for w, h in family_named("sdxl").buckets]
    for resolution in (256, 512, 768):
        for h, w in buckets(resolution):
            assert h % 32 == 0 and w % 32 == 0 and 0.8 < h * w / resolution**2 < 1.2


def test_a_subject_at_the_edge_of_a_wide_photo_stays_whole_in_the_crop(node):
    height, width = 300, 900  # 3:1
    image = torch.full((1, height, width, 3), 0.8)
    mask = torch.zeros(1, height, width)
    mask[:, 100:220, 8:118] = 1  # at the left edge
    image[mask.bool()] = torch.tensor([0.9, 0.1, 0.1])
    pixels, masks, crops = node.prepare_images(image, mask, 256)
    h, w = pixels.shape[1:3]
    assert (h, w) in buckets(256) and w / h > 2  # the widest bucket, not a square
    # A centre cut of that bucket would lose part of the subject: the test is about a real risk.
    centre = plan_crop(height, width, (h, w))
    scale = centre.resized_width / width
    assert centre.left > 8 * scale
    # The subject's whole area is in the crop (area-resampled mask sum = subject area × scale²).
    kept = masks.sum().item() / (mask.sum().item() * scale * scale)
    assert kept == pytest.approx(1.0, abs=0.03)
    orig_h, orig_w, top, left, target_h, target_w = crops[0].time_ids()
    assert (orig_h, orig_w, target_h, target_w) == (height, width, h, w)
    assert left <= 8 * scale and left + w >= 118 * scale and top <= 100 * scale and top + h >= 220 * scale
    red = (pixels[0, ..., 0] > 0.85) & (pixels[0, ..., 1] < 0.2)
    assert red.sum().item() / (masks.sum().item()) == pytest.approx(1.0, abs=0.05)


def test_a_3_2_photo_gets_the_3_2_bucket_in_node_and_fit_alike(node, tmp_path):
    from image_alchemy.training.fit import load_images

    rng = np.random.default_rng(0)
    photo = (rng.uniform(0, 1, (400, 600, 3)) * 255).round().astype(np.uint8)
    (tmp_path / "photos").mkdir()
    Image.fromarray(photo).save(tmp_path / "photos" / "a.png")
    fit_pixels, fit_crops = load_images(str(tmp_path / "photos"), 1024)
    pixels, masks, crops = node.prepare_images(torch.from_numpy(photo.astype(np.float32) / 255.0)[None], None, 1024)
    time_ids, fit_ids = [c.time_ids() for c in crops], [c.time_ids() for c in fit_crops]
    assert pixels.shape == (1, 832, 1216, 3) and masks is None  # SDXL's 1216×832 (1.46:1)
    # Cover scale 1216/600: 400 → 811 < 832, so the height decides (832/400): 1248 wide, cut 16 px each side.
    assert time_ids == [[400, 600, 0, 16, 832, 1216]] == fit_ids
    assert torch.allclose(pixels.movedim(-1, 1) * 2 - 1, fit_pixels, atol=1e-5)


def test_a_3_2_photo_trains_at_the_3_2_bucket_through_the_server(comfy):
    from comfy_execution.graph_utils import GraphBuilder
    from support.reliability_helpers import shaped_image

    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    g.node(
        "ImageAlchemy_TrainSubjectLoRA",
        model=loader.out(0),
        clip=loader.out(1),
        vae=loader.out(2),
        images=shaped_image(g, batch=2, height=200, width=300),
        token="iklan",
        class_word="disc",
        lora_name="crops_3_2",
        steps=1,
        learning_rate=1e-3,
        rank=2,
        alpha=0.0,
        batch_size=2,
        resolution=512,
        seed=0,
        mixed_precision="no",
        gradient_checkpointing="off",
        flip=False,
        noise_offset=0.0,
        gradient_accumulation=1,
    )
    comfy.run(g.finalize(), timeout=600)
    with safe_open(str(comfy.base_dir / "models" / "loras" / "crops_3_2.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_resolution"] == "(608, 416)"  # width, height: 512's 3:2-ish bucket
