"""The paper's two-stage pipeline as one API-format graph on the real server, every stage-2 node in it:
tiny txt2img (stage 1, no LoRA) → GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert (subject LoRA) → SaveImage."""

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from image_alchemy.alchemy import masks
from tiny_models import detectors as tiny_detectors
from tiny_models.lora import write_kohya_lora

DINO, SAM, LORA = "pipeline-dino", "pipeline_sam.pth", "pipeline_subject.safetensors"
GROW, FEATHER = 0, 0  # the random tiny SAM draws thin stripes: any growth would cover the image


@pytest.fixture(scope="module")
def stage2_models(comfy, tiny_models):
    models = comfy.base_dir / "models"
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / DINO)
    tiny_detectors.write_sam(models / "sams" / SAM)
    write_kohya_lora(models / "loras" / LORA, tiny_models["unet"])


def two_stage_graph(seed=0):
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    scene_prompt = g.node("CLIPTextEncode", text="a photo of a dog on a beach", clip=loader.out(1))
    subject_prompt = g.node("CLIPTextEncode", text="a photo of iklan dog on a beach", clip=loader.out(1))
    negative = g.node("CLIPTextEncode", text="", clip=loader.out(1))
    latent = g.node("EmptyLatentImage", width=96, height=96, batch_size=1)
    stage1 = g.node(
        "KSampler",
        model=loader.out(0),
        positive=scene_prompt.out(0),
        negative=negative.out(0),
        latent_image=latent.out(0),
        seed=seed,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    scene = g.node("VAEDecode", samples=stage1.out(0), vae=loader.out(2))
    mask = g.node(
        "ImageAlchemy_GroundedSAMMask",
        image=scene.out(0),
        grounding_dino=g.node("ImageAlchemy_GroundingDinoLoader", model_name=DINO).out(0),
        sam=g.node("ImageAlchemy_SAMLoader", model_name=SAM).out(0),
        prompt="dog",
        box_threshold=0.0,
        text_threshold=0.0,
        area_penalty=0.05,
        max_objects=2,
        grow=0,
        feather=0,
        if_nothing_found="whole image",
    )
    blurred = g.node(
        "ImageAlchemy_DecayBlur",
        image=scene.out(0),
        mask=mask.out(0),
        mode="exponential-decay",
        kernel_size=31,
        sigma=20.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    inserted = g.node(
        "ImageAlchemy_LoRAImg2ImgInsert",
        model=loader.out(0),
        vae=loader.out(2),
        image=blurred.out(0),
        mask=mask.out(0),
        lora_name=LORA,
        lora_strength=1.0,
        positive=subject_prompt.out(0),
        negative=negative.out(0),
        seed=seed,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.8,
        grow=GROW,
        feather=FEATHER,
        crop_mode="crop",
        context=0.5,
        resolution=64,
    )
    saves = {
        name: g.node("SaveImage", images=node.out(0), filename_prefix=f"pipeline_{name}")
        for name, node in (("scene", scene), ("blurred", blurred), ("final", inserted))
    }
    saves["mask"] = g.node(
        "SaveImage", images=g.node("MaskToImage", mask=mask.out(0)).out(0), filename_prefix="pipeline_mask"
    )
    return g, saves, {"mask": mask, "blurred": blurred}


def test_two_stage_pipeline_repaints_only_the_subject_region(comfy, stage2_models):
    g, saves, stage2 = two_stage_graph()
    entry = comfy.run(g.finalize(), timeout=600)
    # GroundedSAMMask and DecayBlur show their result on the node: DecayBlur at the image's size, GroundedSAMMask's
    # 96 px picture enlarged 3× (to PREVIEW_MIN_SIDE's 256 or more) with any policy note in a band above it.
    assert [im.size for im in comfy.output_images(entry, stage2["blurred"].id)] == [(96, 96)]
    [(width, height)] = [im.size for im in comfy.output_images(entry, stage2["mask"].id)]
    assert width == 288 and height >= 288, (width, height)
    out = {name: np.asarray(comfy.output_images(entry, node.id)[0].convert("RGB")) for name, node in saves.items()}
    for image in out.values():
        assert image.shape == (96, 96, 3)
    subject = torch.from_numpy(out["mask"][..., 0] > 127).float()
    # Random detectors find arbitrary (but seeded) boxes; these settings keep about a third of the image.
    assert 0 < subject.mean() < 1, float(subject.mean())

    # DecayBlur changed the subject region; the insert repainted inside it and kept every pixel outside the
    # grown + feathered mask exactly as DecayBlur left it.
    inside = subject.numpy() == 1
    assert not np.array_equal(out["blurred"][inside], out["scene"][inside])
    stitch = masks.feather_mask(masks.grow_mask(subject[None], GROW), FEATHER)[0].numpy()
    outside = stitch == 0
    assert outside.any(), float(subject.mean())
    assert np.array_equal(out["final"][outside], out["blurred"][outside])
    assert not np.array_equal(out["final"][inside], out["blurred"][inside])
