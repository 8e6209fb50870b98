"""The pack inside a real ComfyUI server: native txt2img on the tiny model, failure isolation, registration."""

import pytest
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from support.graphs import tiny_scene


def tiny_txt2img(width=64, height=64, seed=0):
    g = GraphBuilder()
    return g, tiny_scene(g, width=width, height=height, seed=seed)[1]


def test_tiny_txt2img_through_native_nodes(comfy):
    g, decoded = tiny_txt2img(width=96, height=64)
    save = g.node("SaveImage", images=decoded.out(0), filename_prefix="txt2img")
    entry = comfy.run(g.finalize())
    images = comfy.output_images(entry, save.id)
    assert len(images) == 1
    assert images[0].size == (96, 64)
    # A random model still produces a non-constant picture (NaNs would decode to a flat image).
    extrema = images[0].convert("L").getextrema()
    assert extrema[1] > extrema[0]


def test_failing_node_fails_only_its_prompt(comfy):
    g, decoded = tiny_txt2img()
    g.node(
        "SaveImage",
        images=g.node("ImageAlchemyTest_FailOnPurpose", image=decoded.out(0)).out(0),
        filename_prefix="never",
    )
    with pytest.raises(PromptFailed, match="always fails"):
        comfy.run(g.finalize())
    assert comfy.alive()

    g, decoded = tiny_txt2img(seed=1)
    save = g.node("SaveImage", images=decoded.out(0), filename_prefix="after_failure")
    entry = comfy.run(g.finalize())
    assert comfy.output_images(entry, save.id)[0].size == (64, 64)


def test_pack_nodes_are_registered_with_category_and_description(comfy):
    info = comfy.object_info()
    ours = {
        name: spec for name, spec in info.items() if spec.get("python_module", "").endswith("comfyui-image-alchemy")
    }
    assert set(ours) == {
        "ImageAlchemy_RareTokenPicker",
        "ImageAlchemy_TrainSubjectLoRA",
        "ImageAlchemy_GroundingDinoLoader",
        "ImageAlchemy_SAMLoader",
        "ImageAlchemy_GroundedSAMMask",
        "ImageAlchemy_DecayBlur",
        "ImageAlchemy_LoRAImg2ImgInsert",
        "ImageAlchemy_SubjectMetrics",
        "ImageAlchemy_MaskFromBatch",
        "ImageAlchemy_PhotoList",
    }
    for name, spec in ours.items():
        assert spec["category"].startswith("Image Alchemy"), name
        assert spec["description"].strip(), name
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                options = input_spec[1] if len(input_spec) > 1 else {}
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert all(spec["output_tooltips"]), f"{name}: an output has no tooltip"
    assert "ImageAlchemyTest_TinySDXLLoader" in info
