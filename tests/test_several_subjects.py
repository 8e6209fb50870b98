"""Two learned subjects in one scene through the real server: two tiny LoRAs, two known subject regions, two
DecayBlur + LoRAImg2ImgInsert chains, the second stitching onto the first one's result.

Disjoint regions: outside both repaint regions the result is the scene, region A is what inserting A alone gives,
region B what inserting B alone gives, and the order of the two inserts does not matter. Overlapping regions follow
the README's rule: the later insert repaints over the earlier one inside its own repaint region, and outside it the
image is what the earlier insert left, bit for bit."""

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from image_alchemy.alchemy import masks
from tiny_models.lora import write_kohya_lora

SIZE, SUBJECT = 192, 40
KEEP_PNG = "several_keep_a.png"
LORA_A, LORA_B = "several_iklan_dog.safetensors", "several_ffin_cat.safetensors"
BLUR = dict(
    mode="exponential-decay", kernel_size=15, sigma=6.0, decay_lambda=5.0, distance_unit="kernel radius", decay="sigma"
)
INSERT = dict(
    lora_strength=1.0,
    seed=11,
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


@pytest.fixture(scope="module")
def loras(comfy, tiny_models):
    loras = comfy.base_dir / "models" / "loras"
    write_kohya_lora(loras / LORA_A, tiny_models["unet"], seed=1)
    write_kohya_lora(loras / LORA_B, tiny_models["unet"], seed=2)


@pytest.fixture(scope="module")
def keep_png(comfy):
    """Subject A's square (overlap test's corner) as an 8-bit grayscale PNG the way an editor or a lossy round trip
    leaves a white mask: 254 (0.996) inside, a one-pixel antialiased edge of 128 (0.502) around it."""
    from PIL import Image

    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[59 : 60 + SUBJECT + 1, 59 : 60 + SUBJECT + 1] = 128
    mask[60 : 60 + SUBJECT, 60 : 60 + SUBJECT] = 254
    Image.fromarray(mask, "L").save(comfy.base_dir / "input" / KEEP_PNG)


def square(g, x, y):
    """A SUBJECT² square of 1 at (x, y) in a SIZE² mask, from core nodes."""
    empty = g.node("SolidMask", value=0.0, width=SIZE, height=SIZE)
    subject = g.node("SolidMask", value=1.0, width=SUBJECT, height=SUBJECT)
    return g.node("MaskComposite", destination=empty.out(0), source=subject.out(0), x=x, y=y, operation="add")


def two_subject_graph(corner_a, corner_b):
    """Returns the graph and its saved images: the scene, each subject alone, A then B, B then A, A's region
    repainted with B's LoRA, and the two blur regions."""
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    scene = g.node("ImageAlchemyTest_ShapedImage", batch=1, height=SIZE, width=SIZE, channels=3)
    neg = g.node("CLIPTextEncode", text="", clip=loader.out(1))
    subjects = {}
    for name, corner, lora, text in (
        ("a", corner_a, LORA_A, "a photo of iklan dog"),
        ("b", corner_b, LORA_B, "a photo of ffin cat"),
    ):
        subject = square(g, *corner)
        blur = g.node("ImageAlchemy_DecayBlur", image=scene.out(0), mask=subject.out(0), **BLUR)
        pos = g.node("CLIPTextEncode", text=text, clip=loader.out(1))
        subjects[name] = (blur, pos, lora, subject)

    def insert(name, onto, lora=None, keep=None):
        blur, pos, own, _ = subjects[name]
        extra = {"keep": subjects[keep][3].out(0) if isinstance(keep, str) else keep} if keep else {}
        return g.node(
            "ImageAlchemy_LoRAImg2ImgInsert",
            model=loader.out(0),
            vae=loader.out(2),
            image=blur.out(0),
            mask=blur.out(2),
            scene=onto,
            positive=pos.out(0),
            negative=neg.out(0),
            lora_name=lora or own,
            **INSERT,
            **extra,
        )

    a_alone, b_alone = insert("a", scene.out(0)), insert("b", scene.out(0))
    images = {
        "scene": scene,
        "a": a_alone,
        "b": b_alone,
        "ab": insert("b", a_alone.out(0)),
        "ba": insert("a", b_alone.out(0)),
        "a_with_lora_b": insert("a", scene.out(0), LORA_B),
        "ab_keep_a": insert("b", a_alone.out(0), keep="a"),
        # A's subject as a grayscale PNG through core LoadImageMask (KEEP_PNG: 254 inside, an antialiased edge).
        "ab_keep_png": insert("b", a_alone.out(0), keep=g.node("LoadImageMask", image=KEEP_PNG, channel="red").out(0)),
    }
    saves = {
        name: g.node("SaveImage", images=node.out(0), filename_prefix=f"several_{name}")
        for name, node in images.items()
    }
    for name in ("a", "b"):
        region = g.node("MaskToImage", mask=subjects[name][0].out(2))
        saves[f"region_{name}"] = g.node("SaveImage", images=region.out(0), filename_prefix=f"several_region_{name}")
        subject = g.node("MaskToImage", mask=subjects[name][3].out(0))
        saves[f"subject_{name}"] = g.node("SaveImage", images=subject.out(0), filename_prefix=f"several_subj_{name}")
    return g, saves


def run(comfy, corner_a, corner_b):
    g, saves = two_subject_graph(corner_a, corner_b)
    entry = comfy.run(g.finalize(), timeout=600)
    out = {
        name: np.asarray(comfy.output_images(entry, save.id)[0].convert("RGB")).astype(np.int16)
        for name, save in saves.items()
    }
    # Each insert's repaint region: the blur region grown and feathered by the insert's settings.
    for name in ("a", "b"):
        region = torch.from_numpy(out.pop(f"region_{name}")[..., 0] / 255.0).float()
        out[f"repaint_{name}"] = masks.feather_mask(masks.grow_mask(region[None], INSERT["grow"]), INSERT["feather"])[
            0
        ].numpy()
        out[f"subject_{name}"] = out[f"subject_{name}"][..., 0] > 127
    return out


def test_two_disjoint_subjects_each_as_inserted_alone_in_any_order(comfy, loras, keep_png):
    out = run(comfy, (16, 16), (136, 136))
    scene, in_a, in_b = out["scene"], out["repaint_a"] > 0, out["repaint_b"] > 0
    assert in_a.mean() > 0.05 and in_b.mean() > 0.05 and not (in_a & in_b).any()
    # Both subjects were repainted, and by their own LoRA.
    assert np.abs(out["a"][in_a] - scene[in_a]).mean() > 5 and np.abs(out["b"][in_b] - scene[in_b]).mean() > 5
    assert np.abs(out["a"][in_a] - out["a_with_lora_b"][in_a]).mean() > 1
    outside = ~in_a & ~in_b
    for order in ("ab", "ba"):
        final = out[order]
        assert np.array_equal(final[outside], scene[outside]), order
        assert np.array_equal(final[in_a], out["a"][in_a]), order
        assert np.array_equal(final[in_b], out["b"][in_b]), order
    assert np.array_equal(out["ab"], out["ba"])


def test_overlapping_subjects_the_later_insert_repaints_over_the_earlier(comfy, loras, keep_png):
    out = run(comfy, (60, 60), (84, 84))  # the squares overlap by 16 px on each axis
    in_a, in_b = out["repaint_a"] > 0, out["repaint_b"] > 0
    both = in_a & in_b
    assert both.mean() > 0.02
    # Outside the later insert's repaint region: what the earlier insert left, bit for bit ...
    assert np.array_equal(out["ab"][~in_b], out["a"][~in_b])
    assert np.array_equal(out["ba"][~in_a], out["b"][~in_a])
    # ... outside both: the scene; and the order matters where they overlap.
    outside = ~in_a & ~in_b
    assert np.array_equal(out["ab"][outside], out["scene"][outside])
    assert not np.array_equal(out["ab"][both], out["ba"][both])
    # With A's subject mask linked to B's keep input, B repaints around A's subject but never over it.
    subject_a = out["subject_a"]
    assert (subject_a & in_b).sum() > 100
    assert np.array_equal(out["ab_keep_a"][subject_a], out["a"][subject_a])
    assert np.array_equal(out["ab_keep_a"][~in_b], out["a"][~in_b])
    assert not np.array_equal(out["ab"][subject_a & in_b], out["a"][subject_a & in_b])  # without keep it does
    # The same subject as a grayscale PNG mask through LoadImageMask (0.996 inside, 0.502 on its edge): kept alike.
    assert np.array_equal(out["ab_keep_png"][subject_a], out["a"][subject_a])
    assert np.array_equal(out["ab_keep_png"][~in_b], out["a"][~in_b])
    around = in_b & ~subject_a & (out["repaint_b"] == 1)
    assert np.abs(out["ab_keep_a"][around] - out["a"][around]).mean() > 5  # B still repainted its own region
