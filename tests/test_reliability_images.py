"""Bad-input matrix for the image nodes through the real server: GroundedSAMMask and its loaders, DecayBlur and
LoRAImg2ImgInsert. Every case either fails with an error that names the node, the problem and the fix, or gives
a documented result; the server stays up and a failing prompt writes or changes no file."""

import shutil

import numpy as np
import pytest
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image
from support.reliability_helpers import (
    expect_error,
    save,
    save_mask,
    shaped_image,
    snapshot,
    solid_mask,
    write_pickle_bomb,
    write_truncated,
)
from tiny_models import detectors as tiny_detectors
from tiny_models.lora import write_kohya_lora

DINO, DINO_PTH, SAM = "rel-dino", "rel_dino.pth", "rel_sam.pth"
LORA = "rel_ok.safetensors"


@pytest.fixture(scope="module")
def files(comfy, tiny_models, tmp_path_factory):
    """Good and bad model files in the server's model folders; removed afterwards (other modules list them)."""
    models = comfy.base_dir / "models"
    marker = tmp_path_factory.mktemp("pickle") / "code_ran"
    made = []

    def keep(path):
        made.append(path)
        return path

    hf = keep(tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / DINO))
    pth = keep(tiny_detectors.write_grounding_dino_original(models / "grounding-dino", hf, DINO_PTH))
    sam = keep(tiny_detectors.write_sam(models / "sams" / SAM))
    keep(write_truncated(models / "sams" / "rel_sam_truncated.pth", sam))
    keep(models / "sams" / "rel_sam_garbage.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    keep(write_pickle_bomb(models / "sams" / "rel_sam_pickle.pth", marker))
    keep(shutil.copy(tiny_models["unet"], models / "sams" / "rel_sam_is_a_unet.safetensors"))
    keep(write_truncated(models / "grounding-dino" / "rel_dino_truncated.pth", pth))
    keep(write_pickle_bomb(models / "grounding-dino" / "rel_dino_pickle.pth", marker))
    keep(shutil.copy(sam, models / "grounding-dino" / "rel_dino_is_sam.pth"))
    no_weights = keep(models / "grounding-dino" / "rel-dino-no-weights")
    no_weights.mkdir(exist_ok=True)
    shutil.copy(hf / "config.json", no_weights / "config.json")
    ok = keep(write_kohya_lora(models / "loras" / LORA, tiny_models["unet"]))
    keep(write_truncated(models / "loras" / "rel_truncated.safetensors", ok))
    keep(models / "loras" / "rel_garbage.safetensors").write_bytes(b"\x00" * 64)
    keep(write_pickle_bomb(models / "loras" / "rel_pickle.pt", marker))
    keep(shutil.copy(sam, models / "loras" / "rel_other_arch.pth"))
    yield {"marker": marker}
    for path in made:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert not marker.exists(), "a pickle was loaded with code execution"


def segment(g, image, dino=DINO, sam=SAM, **overrides):
    settings = dict(
        prompt="dog",
        box_threshold=0.0,
        text_threshold=0.0,
        area_penalty=0.1,
        max_objects=1,
        grow=0,
        feather=0,
        if_nothing_found="empty mask",
    )
    settings.update(overrides)
    d = g.node("ImageAlchemy_GroundingDinoLoader", model_name=dino)
    s = g.node("ImageAlchemy_SAMLoader", model_name=sam)
    return g.node("ImageAlchemy_GroundedSAMMask", image=image, grounding_dino=d.out(0), sam=s.out(0), **settings)


def blur(g, image, mask, **overrides):
    settings = dict(
        mode="exponential-decay",
        kernel_size=15,
        sigma=5.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    settings.update(overrides)
    return g.node("ImageAlchemy_DecayBlur", image=image, mask=mask, **settings)


def insert(g, image, mask, lora=LORA, **overrides):
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    pos = g.node("CLIPTextEncode", text="a photo of iklan dog", clip=loader.out(1))
    neg = g.node("CLIPTextEncode", text="", clip=loader.out(1))
    settings = dict(
        lora_name=lora,
        lora_strength=1.0,
        seed=0,
        steps=1,
        cfg=3.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.5,
        grow=0,
        feather=4,
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


def run_images(comfy, g, node, prefix):
    return [np.asarray(im, np.float32) / 255 for im in comfy.output_images(comfy.run(g.finalize()), node.id)]


# -- cases that must fail: (id, graph builder, regexes the error must match) -----------------------------------
def _seg_empty(g):
    save_mask(g, segment(g, shaped_image(g, batch=0)).out(0), "never")


def _seg_one_channel(g):
    save_mask(g, segment(g, shaped_image(g, channels=1)).out(0), "never")


def _seg_error_policy(g):
    save_mask(g, segment(g, shaped_image(g), box_threshold=1.01, if_nothing_found="error").out(0), "never")


def _seg_empty_prompt(g):
    save_mask(g, segment(g, shaped_image(g), prompt="  ").out(0), "never")


def _with_models(dino=DINO, sam=SAM):
    def build(g):
        save_mask(g, segment(g, shaped_image(g), dino=dino, sam=sam).out(0), "never")

    return build


def _blur(channels=3, batch=1, mask_batch=1, **overrides):
    def build(g):
        mask = solid_mask(g, 1.0)
        if mask_batch > 1:
            mask = g.node("ImageToMask", image=shaped_image(g, batch=mask_batch), channel="red").out(0)
        save(g, blur(g, shaped_image(g, batch=batch, channels=channels), mask, **overrides).out(0), "never")

    return build


def _insert(lora=LORA, batch=1, channels=3, mask_batch=1, **overrides):
    def build(g):
        mask = (
            solid_mask(g, 1.0, 32, 32)
            if mask_batch == 1
            else g.node("ImageToMask", image=shaped_image(g, batch=mask_batch), channel="red").out(0)
        )
        save(
            g, insert(g, shaped_image(g, batch=batch, channels=channels), mask, lora=lora, **overrides).out(0), "never"
        )

    return build


NODE_FIX = {
    "sam": r"SAMLoader: cannot load.*download it again into models/sams",
    "dino": r"GroundingDinoLoader: cannot load.*download it again into models/grounding-dino",
}
FAILING = [
    ("segment: empty image batch", _seg_empty, [r"GroundedSAMMask", r"image batch is empty"]),
    (
        "segment: 1-channel image",
        _seg_one_channel,
        [r"GroundedSAMMask: expected RGB or RGBA images, got 1 channel", r"convert"],
    ),
    (
        "segment: zero detections with policy 'error'",
        _seg_error_policy,
        [r"GroundedSAMMask: nothing matching 'dog'", r"box_threshold", r"if_nothing_found"],
    ),
    ("segment: empty prompt", _seg_empty_prompt, [r"GroundedSAMMask", r"prompt is empty", r"e\.g\. 'dog'"]),
    (
        "sam: truncated checkpoint",
        _with_models(sam="rel_sam_truncated.pth"),
        [NODE_FIX["sam"], r"'rel_sam_truncated.pth'"],
    ),
    ("sam: not a safetensors file", _with_models(sam="rel_sam_garbage.safetensors"), [NODE_FIX["sam"]]),
    ("sam: pickle with code", _with_models(sam="rel_sam_pickle.pth"), [NODE_FIX["sam"], r"pickled Python objects"]),
    (
        "sam: another architecture",
        _with_models(sam="rel_sam_is_a_unet.safetensors"),
        [NODE_FIX["sam"], r"not a Segment Anything checkpoint"],
    ),
    (
        "sam: missing weights",
        _with_models(sam="sam_vit_h_4b8939.pth"),
        [r"sam_vit_h_4b8939\.pth", r"'sams' model folder"],
    ),
    ("sam: '../' name", _with_models(sam="../tiny_sdxl/unet.safetensors"), [r"not found in the 'sams' model folder"]),
    ("sam: absolute path", _with_models(sam="/etc/passwd"), [r"not found in the 'sams' model folder"]),
    ("dino: truncated checkpoint", _with_models(dino="rel_dino_truncated.pth"), [NODE_FIX["dino"]]),
    ("dino: pickle with code", _with_models(dino="rel_dino_pickle.pth"), [NODE_FIX["dino"], r"pickled Python objects"]),
    (
        "dino: another architecture",
        _with_models(dino="rel_dino_is_sam.pth"),
        [NODE_FIX["dino"], r"not an original GroundingDINO checkpoint"],
    ),
    ("dino: folder without weights", _with_models(dino="rel-dino-no-weights"), [NODE_FIX["dino"]]),
    ("dino: '../' name", _with_models(dino="../sams/" + SAM), [r"not found in the 'grounding-dino' model folder"]),
    ("blur: 1-channel image", _blur(channels=1), [r"DecayBlur: expected RGB or RGBA images, got 1 channels"]),
    ("blur: even kernel", _blur(kernel_size=16), [r"DecayBlur: kernel_size must be odd", r"use 17"]),
    (
        "blur: 3 masks for 2 images",
        _blur(batch=2, mask_batch=3),
        [r"DecayBlur: the mask batch has 3 masks but the image batch has 2", r"one mask per image"],
    ),
    ("blur: empty image batch", _blur(batch=0), [r"DecayBlur: the image batch is empty"]),
    (
        "insert: truncated LoRA",
        _insert(lora="rel_truncated.safetensors"),
        [r"LoRAImg2ImgInsert: cannot read the LoRA 'rel_truncated", r"train it again"],
    ),
    (
        "insert: LoRA not safetensors",
        _insert(lora="rel_garbage.safetensors"),
        [r"LoRAImg2ImgInsert: cannot read the LoRA 'rel_garbage", r"train it again"],
    ),
    (
        "insert: pickled LoRA",
        _insert(lora="rel_pickle.pt"),
        [r"LoRAImg2ImgInsert: the LoRA 'rel_pickle.pt' holds pickled", r"use a \.safetensors LoRA"],
    ),
    ("insert: 1-channel image", _insert(channels=1), [r"LoRAImg2ImgInsert: expected RGB or RGBA"]),
    (
        "insert: LoRA for another architecture",
        _insert(lora="rel_other_arch.pth"),
        [r"LoRAImg2ImgInsert: none of the keys", r"trained for this base model"],
    ),
    (
        "insert: '../' LoRA name",
        _insert(lora="../sams/rel_sam.pth"),
        [r"ImageAlchemy_LoRAImg2ImgInsert", r"the LoRA '.*' is not in models/loras: pick one from the list"],
    ),
    (
        "insert: absolute LoRA path",
        _insert(lora="/etc/passwd"),
        [r"ImageAlchemy_LoRAImg2ImgInsert", r"the LoRA '.*' is not in models/loras: pick one from the list"],
    ),
    (
        "insert: odd characters in LoRA name",
        _insert(lora="rel_ok.safetensors;rm -rf ~"),
        [r"ImageAlchemy_LoRAImg2ImgInsert", r"the LoRA '.*' is not in models/loras: pick one from the list"],
    ),
    (
        "insert: missing LoRA file",
        _insert(lora="subject_that_was_never_trained.safetensors"),
        [r"ImageAlchemy_LoRAImg2ImgInsert", r"the LoRA '.*' is not in models/loras: pick one from the list"],
    ),
    ("insert: empty image batch", _insert(batch=0), [r"LoRAImg2ImgInsert: the image batch is empty"]),
    (
        "insert: 3 masks for 2 images",
        _insert(batch=2, mask_batch=3),
        [r"LoRAImg2ImgInsert: the mask batch has 3 masks but the image batch has 2", r"one mask per image"],
    ),
]


@pytest.mark.parametrize("build, patterns", [c[1:] for c in FAILING], ids=[c[0] for c in FAILING])
def test_bad_input_fails_clearly_and_writes_nothing(comfy, files, build, patterns):
    g = GraphBuilder()
    build(g)
    expect_error(comfy, g.finalize(), *patterns)


# -- cases with a documented result ---------------------------------------------------------------------------
def test_segment_rgba_16bit_and_huge_images_give_one_mask_of_their_size(comfy, files):
    rgb16 = (np.random.default_rng(0).random((40, 56)) * 65535).astype(np.uint16)
    Image.fromarray(rgb16).save(comfy.base_dir / "input" / "rel_16bit.png")  # mode I;16
    g = GraphBuilder()
    rgba = g.node("JoinImageWithAlpha", image=shaped_image(g), alpha=solid_mask(g, 0.5)).out(0)
    loaded = g.node("LoadImage", image="rel_16bit.png").out(0)
    huge = shaped_image(g, height=2048, width=3072)
    outs = [
        save_mask(g, segment(g, img, if_nothing_found="whole image").out(0), f"rel_seg_{i}")
        for i, img in enumerate((rgba, loaded, huge))
    ]
    entry = comfy.run(g.finalize(), timeout=300)
    sizes = [[im.size for im in comfy.output_images(entry, o.id)] for o in outs]
    assert sizes == [[(64, 64)], [(56, 40)], [(3072, 2048)]]


def test_segment_zero_detections_follow_the_policy(comfy, files):
    g = GraphBuilder()
    image = shaped_image(g, batch=2)
    outs = {
        p: save_mask(g, segment(g, image, box_threshold=1.01, if_nothing_found=p).out(0), "rel_zero")
        for p in ("empty mask", "whole image")
    }
    entry = comfy.run(g.finalize())
    for policy, value in (("empty mask", 0.0), ("whole image", 1.0)):
        masks = [np.asarray(im.convert("L"), np.float32) / 255 for im in comfy.output_images(entry, outs[policy].id)]
        assert len(masks) == 2 and all(np.all(m == value) for m in masks)  # the batch keeps its size


def test_blur_mask_edge_cases(comfy, files):
    """All-zero mask: image unchanged; all-ones: blurred everywhere; a mask of another size is resized; RGBA keeps
    its alpha; a 16-bit PNG and a large image go through."""
    Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30 % 65535).astype(np.uint16)).save(
        comfy.base_dir / "input" / "rel_16bit_blur.png"
    )
    g = GraphBuilder()
    image = shaped_image(g)
    zeros = save(g, blur(g, image, solid_mask(g, 0.0)).out(0), "rel_blur_zero")
    ones = save(g, blur(g, image, solid_mask(g, 1.0), mode="gaussian").out(0), "rel_blur_ones")
    resized = save(g, blur(g, image, solid_mask(g, 1.0, 17, 23)).out(0), "rel_blur_resized")
    original = save(g, image, "rel_blur_original")
    rgba = g.node("JoinImageWithAlpha", image=image, alpha=solid_mask(g, 0.25)).out(0)
    rgba_out = blur(g, rgba, solid_mask(g, 1.0))
    alpha = save_mask(g, g.node("SplitImageWithAlpha", image=rgba_out.out(0)).out(1), "rel_blur_alpha")
    loaded = save(
        g,
        blur(g, g.node("LoadImage", image="rel_16bit_blur.png").out(0), solid_mask(g, 1.0, 40, 48)).out(0),
        "rel_blur_16",
    )
    huge = blur(g, shaped_image(g, height=2048, width=2048), solid_mask(g, 1.0, 512, 512), kernel_size=151, sigma=100.0)
    huge_out = save(
        g,
        g.node("ImageScale", image=huge.out(0), upscale_method="area", width=64, height=64, crop="disabled").out(0),
        "rel_blur_huge",
    )
    entry = comfy.run(g.finalize(), timeout=300)
    get = lambda node: [np.asarray(im, np.float32) / 255 for im in comfy.output_images(entry, node.id)]  # noqa: E731
    base = get(original)[0]
    assert np.array_equal(get(zeros)[0], base)
    assert np.abs(get(ones)[0] - base).mean() > 0.05
    assert get(resized)[0].shape == base.shape
    # SplitImageWithAlpha returns 1 − alpha as its mask; JoinImageWithAlpha stored 1 − 0.25.
    assert np.allclose(get(alpha)[0], 0.25, atol=1 / 255)
    assert get(loaded)[0].shape[:2] == (40, 48) and get(huge_out)[0].shape[:2] == (64, 64)


def test_insert_empty_mask_returns_the_image_and_full_mask_changes_it(comfy, files):
    g = GraphBuilder()
    image = shaped_image(g)
    original = save(g, image, "rel_ins_original")
    unchanged = save(g, insert(g, image, solid_mask(g, 0.0)).out(0), "rel_ins_zero")
    changed = save(g, insert(g, image, solid_mask(g, 1.0, 32, 32), crop_mode="whole image").out(0), "rel_ins_ones")
    entry = comfy.run(g.finalize())
    get = lambda node: np.asarray(comfy.output_images(entry, node.id)[0], np.float32)  # noqa: E731
    assert np.array_equal(get(unchanged), get(original))
    assert np.abs(get(changed) - get(original)).mean() > 1.0


def test_failures_left_model_folders_as_they_were(comfy, files):
    """After the whole matrix the model folders hold exactly our files (nothing written next to or outside them)."""
    listed = snapshot(comfy.base_dir)
    assert not [p for p in listed if p.startswith("models/") and p.endswith((".partial", ".tmp"))]
    assert not files["marker"].exists()
