"""SubjectMetrics through the real ComfyUI server, with tiny backbones in models/eval_backbones."""

import numpy as np
import pytest
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from image_alchemy.alchemy import backbones, metrics, quality
from PIL import Image
from support.graphs import tiny_scene
from tiny_models.backbones import CLIP_NAME, DINO_NAME, pictures, write_tiny_backbones

NODE_ID = "ImageAlchemy_SubjectMetrics"


@pytest.fixture(scope="module")
def server(comfy):
    folders = write_tiny_backbones(comfy.base_dir / "models" / "eval_backbones")
    files = {}
    for name, image in zip(("gen_0", "gen_1", "ref_0", "ref_1"), pictures(4, seed=21)):
        Image.fromarray(image).save(comfy.base_dir / "input" / f"eval_{name}.png")
        files[name] = image
    mask = np.zeros((64, 64), np.uint8)
    mask[12:44, 8:40] = 255
    Image.fromarray(mask).save(comfy.base_dir / "input" / "eval_mask.png")
    return {"comfy": comfy, "folders": folders, "pictures": files, "mask": mask / 255.0}


def metrics_node(g, images, references, **kwargs):
    settings = dict(
        prompt="a photo of sks dog", dino_model=DINO_NAME, clip_model=CLIP_NAME, brisque=True, mask_margin=0.1
    )
    settings.update(kwargs)
    return g.node(NODE_ID, images=images, reference_images=references, **settings)


def previews(g, node, outputs=range(1, 5)):
    return [g.node("PreviewAny", source=node.out(i)) for i in outputs]


def preview_values(comfy, entry, nodes):
    return [float(entry["outputs"][n.id]["text"][0]) for n in nodes]


def load(g, name):
    return g.node("LoadImage", image=f"eval_{name}.png").out(0)


def test_schema_lists_backbones_by_kind_with_tooltips(server):
    spec = server["comfy"].object_info()[NODE_ID]
    required = spec["input"]["required"]
    assert required["dino_model"][1]["options"] == ["none", DINO_NAME]
    assert required["clip_model"][1]["options"] == ["none", CLIP_NAME]
    inputs = {**required, **spec["input"].get("optional", {})}
    assert all(opts[1].get("tooltip") for opts in inputs.values())
    assert all(spec["output_tooltips"]) and spec["output_node"] is True
    assert spec["output_name"] == ["table", "dino", "clip_i", "clip_t", "brisque_score"]


def test_identical_images_score_one_and_the_table_shows(server):
    comfy, g = server["comfy"], GraphBuilder()
    image = load(g, "ref_0")
    node = metrics_node(g, image, image)
    shown = previews(g, node)
    entry = comfy.run(g.finalize())
    dino, clip_i, clip_t, brisque = preview_values(comfy, entry, shown)
    assert dino == pytest.approx(1.0, abs=1e-5) and clip_i == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= clip_t <= 1.0 and brisque > 0
    table = entry["outputs"][node.id]["text"][0]
    assert "a photo of sks dog" in table and "real (references)" in table and "overall" not in table
    assert "1.0000" in table and "CLIP-T" in table and "BRISQUE" in table


def test_node_matches_the_library_with_masks(server):
    comfy, g = server["comfy"], GraphBuilder()
    images = g.node("ImageBatch", image1=load(g, "gen_0"), image2=load(g, "gen_1")).out(0)
    references = g.node("ImageBatch", image1=load(g, "ref_0"), image2=load(g, "ref_1")).out(0)
    mask = g.node("LoadImageMask", image="eval_mask.png", channel="red").out(0)
    node = metrics_node(g, images, references, masks=mask, clip_t_prompt="a photo of dog")
    shown = previews(g, node)
    got = preview_values(comfy, comfy.run(g.finalize()), shown)

    p = server["pictures"]
    direct = metrics.evaluate(
        [p["gen_0"], p["gen_1"]],
        ["a photo of sks dog"] * 2,
        [p["ref_0"], p["ref_1"]],
        dino=backbones.DinoBackbone.load(str(server["folders"]["dino"])),
        clip=backbones.ClipBackbone.load(str(server["folders"]["clip"])),
        quality=quality.brisque_scores,
        generated_masks=[server["mask"]],
        margin=0.1,
        clip_t_prompts=["a photo of dog"] * 2,
    ).overall()
    assert got == pytest.approx([direct.dino, direct.clip_i, direct.clip_t, direct.brisque], abs=1e-5)
    assert direct.dino < 0.9999  # different pictures: not the trivial 1.0


def test_scores_a_freshly_sampled_batch(server):
    comfy, g = server["comfy"], GraphBuilder()
    _, decoded = tiny_scene(g, "a photo of sks dog", batch_size=2, seed=3)
    node = metrics_node(g, decoded.out(0), load(g, "ref_0"), brisque=False)
    shown = previews(g, node, outputs=(1, 2, 4))
    entry = comfy.run(g.finalize())
    dino, clip_i, brisque = preview_values(comfy, entry, shown)
    assert -1.0 <= dino <= 1.0 and -1.0 <= clip_i <= 1.0
    assert np.isnan(brisque)  # skipped metrics come out as NaN, not as a made-up number
    table = entry["outputs"][node.id]["text"][0]
    assert "DINO" in table and "BRISQUE" not in table
    assert table.splitlines()[-1].split("|")[2:] == ["        — ", "        — ", "        —"]  # one ref: no pairs


def test_user_errors_name_the_node_and_the_fix(server):
    comfy = server["comfy"]
    g = GraphBuilder()
    image = load(g, "ref_0")
    metrics_node(g, image, image, dino_model="none", clip_model="none", brisque=False)
    with pytest.raises(PromptFailed, match="SubjectMetrics: nothing to compute"):
        comfy.run(g.finalize())

    g = GraphBuilder()
    image = load(g, "ref_0")
    solid = g.node("SolidMask", value=1.0, width=64, height=64)
    three = g.node("RepeatImageBatch", image=g.node("MaskToImage", mask=solid.out(0)).out(0), amount=3)
    node = metrics_node(g, image, image, masks=g.node("ImageToMask", image=three.out(0), channel="red").out(0))
    g.node("PreviewAny", source=node.out(0))
    with pytest.raises(PromptFailed, match="SubjectMetrics: 3 generated masks for 1 generated images"):
        comfy.run(g.finalize())
    assert comfy.alive()
