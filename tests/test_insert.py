"""LoRAImg2ImgInsert: crop/scale/stitch helpers directly, then the node in a real ComfyUI server with a kohya LoRA."""

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from image_alchemy.alchemy import crop_stitch, masks
from PIL import Image
from safetensors.torch import save_file
from tiny_models.lora import write_kohya_lora

LORA = "tiny_subject.safetensors"


# -- pure helpers ------------------------------------------------------------------------------------------------


def block(h, w, top, left, bottom, right):
    m = torch.zeros(h, w)
    m[top:bottom, left:right] = 1.0
    return m


def test_context_box_grows_by_the_longer_side_and_clips():
    m = block(100, 120, 40, 50, 60, 90)  # 20×40 box
    assert crop_stitch.context_box(m, 0.5) == crop_stitch.Box(20, 30, 80, 110)
    assert crop_stitch.context_box(m, 0.0) == crop_stitch.Box(40, 50, 60, 90)
    assert crop_stitch.context_box(m, 5.0) == crop_stitch.Box(0, 0, 100, 120)
    assert crop_stitch.context_box(m, 0.5, whole_image=True) == crop_stitch.Box(0, 0, 100, 120)
    assert crop_stitch.context_box(torch.zeros(10, 10), 0.5) is None
    with pytest.raises(ValueError):
        crop_stitch.context_box(m, -1.0)


def test_model_size_keeps_area_aspect_and_multiples():
    h, w = crop_stitch.model_size(100, 50, 64)
    assert h % 8 == 0 and w % 8 == 0
    assert (h, w) == (88, 48)  # 64² area at 2:1 → 90.5 × 45.3, rounded to multiples of 8
    assert crop_stitch.model_size(100, 50, 0) == (96, 48)
    assert crop_stitch.model_size(3, 500, 64) == (8, 824)  # never below one multiple (4.96 → 8)
    assert crop_stitch.model_size(30, 30, 1024, multiple=16) == (1024, 1024)


def test_stitch_copies_outside_and_blends_inside():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(40, 50, 3, generator=gen)
    mask = masks.feather_mask(block(40, 50, 10, 12, 20, 30)[None], 4)[0]
    box = crop_stitch.context_box(mask, 0.25)
    generated = torch.rand(box.height * 2, box.width * 2, 3, generator=gen)  # sampled at twice the size
    out = crop_stitch.stitch(image, generated, mask, box)
    assert torch.equal(out[mask == 0], image[mask == 0])
    back = crop_stitch.resize_image(generated, box.height, box.width)
    inside = crop_stitch.crop(mask, box) == 1
    assert torch.equal(crop_stitch.crop(out, box)[inside], back[inside])
    y, x = 12, 31  # one pixel right of the block: feathered weight 0.84375 (smoothstep of 0.75)
    w = mask[y, x].item()
    assert 0 < w < 1
    expect = w * back[y - box.top, x - box.left] + (1 - w) * image[y, x]
    assert torch.allclose(out[y, x], expect, atol=1e-6)


def test_stitch_keeps_alpha_and_resize_clamps():
    image = torch.rand(16, 16, 4)
    mask = block(16, 16, 4, 4, 12, 12)
    out = crop_stitch.stitch(image, torch.ones(8, 8, 3) * 2.0, mask, crop_stitch.Box(0, 0, 16, 16))
    assert torch.equal(out[..., 3], image[..., 3])
    assert out.max() <= 1.0


# -- the node in a real server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(comfy, tiny_models):
    """A 96×80 RGB scene and a subject mask (LoadImage mask = 1 − alpha), plus the LoRA in models/loras."""
    write_kohya_lora(comfy.base_dir / "models" / "loras" / LORA, tiny_models["unet"])
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:80, 0:96]
    rgb = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.4], -1) + rng.normal(0, 12, (80, 96, 3))
    rgb = rgb.clip(0, 255).astype(np.uint8)
    subject = block(80, 96, 30, 36, 50, 60).numpy()
    alpha = ((1 - subject) * 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(comfy.base_dir / "input" / "insert_scene.png")
    return rgb, torch.from_numpy(subject)


def insert_node(g, loader, pos, neg, image, mask, **overrides):
    settings = dict(
        lora_name=LORA,
        lora_strength=1.0,
        seed=3,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.9,
        grow=4,
        feather=6,
        crop_mode="crop",
        context=0.5,
        resolution=64,
    )
    settings.update(overrides)
    return g.node(
        "ImageAlchemy_LoRAImg2ImgInsert",
        model=loader.out(0),
        vae=loader.out(2),
        image=image,
        mask=mask,
        positive=pos.out(0),
        negative=neg.out(0),
        **settings,
    )


def graph_with_scene(prompt="a photo of iklan dog"):
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    pos = g.node("CLIPTextEncode", text=prompt, clip=loader.out(1))
    neg = g.node("CLIPTextEncode", text="", clip=loader.out(1))
    scene_node = g.node("LoadImage", image="insert_scene.png")
    return g, loader, pos, neg, scene_node


def pixels(comfy, entry, node):
    return [np.asarray(im.convert("RGB")) for im in comfy.output_images(entry, node.id)]


def test_insert_changes_only_inside_the_feathered_mask_and_the_lora_matters(comfy, scene):
    rgb, subject = scene
    g, loader, pos, neg, scene_node = graph_with_scene()
    saves = {}
    for name, overrides in {
        "lora": {},
        "no_lora": {"lora_strength": 0.0},
        "whole": {"crop_mode": "whole image", "resolution": 0},
    }.items():
        node = insert_node(g, loader, pos, neg, scene_node.out(0), scene_node.out(1), **overrides)
        saves[name] = g.node("SaveImage", images=node.out(0), filename_prefix=f"insert_{name}")
    entry = comfy.run(g.finalize())
    out = {name: pixels(comfy, entry, save)[0] for name, save in saves.items()}

    stitch = masks.feather_mask(masks.grow_mask(subject[None], 4), 6)[0].numpy()
    outside, inside = stitch == 0, subject.numpy() == 1
    for name, image in out.items():
        assert image.shape == rgb.shape, name
        assert np.array_equal(image[outside], rgb[outside]), name  # bit-identical outside
        assert not np.array_equal(image[inside], rgb[inside]), name  # the subject region was repainted
    assert np.abs(out["lora"][inside].astype(int) - out["no_lora"][inside].astype(int)).mean() > 1.0


def test_insert_batch_broadcasts_one_mask_and_empty_mask_is_a_no_op(comfy, scene):
    rgb, subject = scene
    g, loader, pos, neg, scene_node = graph_with_scene()
    batch = g.node("RepeatImageBatch", image=scene_node.out(0), amount=2)
    node = insert_node(g, loader, pos, neg, batch.out(0), scene_node.out(1))
    save = g.node("SaveImage", images=node.out(0), filename_prefix="insert_batch")
    empty = g.node("SolidMask", value=0.0, width=48, height=40)
    node_empty = insert_node(g, loader, pos, neg, batch.out(0), empty.out(0))
    save_empty = g.node("SaveImage", images=node_empty.out(0), filename_prefix="insert_empty")
    entry = comfy.run(g.finalize())
    images = pixels(comfy, entry, save)
    assert len(images) == 2
    # Batch item i gets KSampler's noise for index i: same mask and image, different noise.
    inside = subject.numpy() == 1
    assert not np.array_equal(images[0][inside], images[1][inside])
    assert all(np.array_equal(im, rgb) for im in pixels(comfy, entry, save_empty))


def test_insert_refuses_a_lora_for_another_model_and_mismatched_batches(comfy, scene):
    bogus = {
        "lora_unet_not_a_layer.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_not_a_layer.lora_up.weight": torch.zeros(8, 4),
    }
    save_file(bogus, str(comfy.base_dir / "models" / "loras" / "other_model.safetensors"))
    g, loader, pos, neg, scene_node = graph_with_scene()
    node = insert_node(g, loader, pos, neg, scene_node.out(0), scene_node.out(1), lora_name="other_model.safetensors")
    g.node("SaveImage", images=node.out(0), filename_prefix="never")
    with pytest.raises(PromptFailed, match="none of the keys in the LoRA 'other_model.safetensors' match"):
        comfy.run(g.finalize())

    g, loader, pos, neg, scene_node = graph_with_scene()
    three = g.node("RepeatImageBatch", image=scene_node.out(0), amount=3)
    two = g.node(
        "ImageToMask",
        channel="red",
        image=g.node("RepeatImageBatch", image=g.node("MaskToImage", mask=scene_node.out(1)).out(0), amount=2).out(0),
    )
    node = insert_node(g, loader, pos, neg, three.out(0), two.out(0))
    g.node("SaveImage", images=node.out(0), filename_prefix="never")
    with pytest.raises(PromptFailed, match="LoRAImg2ImgInsert: the mask batch has 2 masks but the image batch has 3"):
        comfy.run(g.finalize())


def test_txt2img_decay_blur_insert_save(comfy, scene):
    """Stage 2 on a generated scene: tiny txt2img → DecayBlur → LoRAImg2ImgInsert → SaveImage."""
    g, loader, pos, neg, scene_node = graph_with_scene()
    latent = g.node("EmptyLatentImage", width=96, height=80, batch_size=1)
    sampled = g.node(
        "KSampler",
        model=loader.out(0),
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent.out(0),
        seed=0,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decoded = g.node("VAEDecode", samples=sampled.out(0), vae=loader.out(2))
    blurred = g.node(
        "ImageAlchemy_DecayBlur",
        image=decoded.out(0),
        mask=scene_node.out(1),
        mode="exponential-decay",
        kernel_size=151,
        sigma=100.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    node = insert_node(g, loader, pos, neg, blurred.out(0), scene_node.out(1))
    save = g.node("SaveImage", images=node.out(0), filename_prefix="stage2")
    entry = comfy.run(g.finalize())
    image = pixels(comfy, entry, save)[0]
    assert image.shape == (80, 96, 3) and image.std() > 0


def test_missing_lora_is_refused_at_validation_unless_a_training_node_supplies_it(comfy, scene):
    g, loader, pos, neg, scene_node = graph_with_scene()
    node = insert_node(
        g, loader, pos, neg, scene_node.out(0), scene_node.out(1), lora_name="not_trained_yet.safetensors"
    )
    g.node("SaveImage", images=node.out(0), filename_prefix="never")
    with pytest.raises(PromptFailed, match="not in models/loras"):
        comfy.run(g.finalize())

    # A linked name (here a constant string node standing in for Train Subject LoRA) passes validation and wins.
    g, loader, pos, neg, scene_node = graph_with_scene()
    name = g.node("StringReplace", string=LORA, find="x", replace="x")
    node = insert_node(
        g,
        loader,
        pos,
        neg,
        scene_node.out(0),
        scene_node.out(1),
        lora_name="not_trained_yet.safetensors",
        lora_name_from_training=name.out(0),
    )
    save = g.node("SaveImage", images=node.out(0), filename_prefix="linked_lora")
    assert comfy.output_images(comfy.run(g.finalize()), save.id)


def test_img2img_start_takes_the_image_inside_the_mask_and_the_scene_outside():
    image, scene = torch.rand(20, 24, 3), torch.rand(20, 24, 3)
    mask = masks.feather_mask(block(20, 24, 5, 6, 10, 12)[None], 3)[0]
    start = crop_stitch.img2img_start(image, scene, mask)
    assert torch.equal(start[mask > 0], image[mask > 0])
    assert torch.equal(start[mask == 0], scene[mask == 0])


def test_insert_stitches_onto_the_scene_and_never_returns_the_blurred_image_outside(comfy, scene):
    """image = DecayBlur's output (blurred far beyond the mask), scene = the unblurred image: outside the grown +
    feathered mask the result is the scene bit for bit, although the blur reached there."""
    rgb, subject = scene
    g, loader, pos, neg, scene_node = graph_with_scene()
    blurred = g.node(
        "ImageAlchemy_DecayBlur",
        image=scene_node.out(0),
        mask=scene_node.out(1),
        mode="exponential-decay",
        kernel_size=31,
        sigma=20.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    node = insert_node(g, loader, pos, neg, blurred.out(0), scene_node.out(1), scene=scene_node.out(0))
    old_way = insert_node(g, loader, pos, neg, blurred.out(0), scene_node.out(1))
    saves = {
        name: g.node("SaveImage", images=n.out(0), filename_prefix=f"insert_scene_{name}")
        for name, n in (("scene", node), ("old", old_way), ("blurred", blurred))
    }
    entry = comfy.run(g.finalize())
    out = {name: pixels(comfy, entry, save)[0] for name, save in saves.items()}
    stitch = masks.feather_mask(masks.grow_mask(subject[None], 4), 6)[0].numpy()
    outside, inside = stitch == 0, subject.numpy() == 1
    ring = outside & np.any(out["blurred"] != rgb, axis=-1)
    assert ring.sum() > 100, int(ring.sum())  # the blur reaches beyond the stitch region
    assert np.array_equal(out["scene"][outside], rgb[outside])
    assert not np.array_equal(out["scene"][inside], rgb[inside])
    # Without the scene input (older graphs) the blurred image is what comes back outside.
    assert np.array_equal(out["old"][outside], out["blurred"][outside])


def test_denoise_zero_and_empty_mask_return_the_input_bit_identical(comfy, scene):
    """denoise 0 samples nothing (no VAE round trip): the scene when linked, else the image, unchanged; the same
    for an empty mask."""
    rgb, subject = scene
    g, loader, pos, neg, scene_node = graph_with_scene()
    blurred = g.node(
        "ImageAlchemy_DecayBlur",
        image=scene_node.out(0),
        mask=scene_node.out(1),
        mode="gaussian",
        kernel_size=15,
        sigma=5.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    empty = g.node("SolidMask", value=0.0, width=96, height=80)
    cases = {
        "zero_image": (scene_node.out(0), scene_node.out(1), {"denoise": 0.0}),
        "zero_scene": (blurred.out(0), scene_node.out(1), {"denoise": 0.0, "scene": scene_node.out(0)}),
        "empty_scene": (blurred.out(0), empty.out(0), {"scene": scene_node.out(0)}),
        "empty_whole": (scene_node.out(0), empty.out(0), {"crop_mode": "whole image"}),
    }
    saves = {}
    for name, (image, mask, overrides) in cases.items():
        node = insert_node(g, loader, pos, neg, image, mask, **overrides)
        saves[name] = g.node("SaveImage", images=node.out(0), filename_prefix=f"insert_noop_{name}")
    entry = comfy.run(g.finalize())
    for name, save in saves.items():
        assert np.array_equal(pixels(comfy, entry, save)[0], rgb), name


def test_insert_refuses_a_scene_of_another_size(comfy, scene):
    g, loader, pos, neg, scene_node = graph_with_scene()
    other = g.node("EmptyImage", width=32, height=32, batch_size=1, color=0)
    node = insert_node(g, loader, pos, neg, scene_node.out(0), scene_node.out(1), scene=other.out(0))
    g.node("SaveImage", images=node.out(0), filename_prefix="never")
    with pytest.raises(PromptFailed, match="LoRAImg2ImgInsert: the scene is 32×32 but the image is 96×80"):
        comfy.run(g.finalize())
