"""TrainSubjectLoRA graphs on the tiny model for the server tests, and what a training may leave behind."""

from __future__ import annotations

from pathlib import Path

from comfy_execution.graph_utils import GraphBuilder

from support.reliability_helpers import shaped_image

TRAIN = "ImageAlchemy_TrainSubjectLoRA"
# Every training graph's settings; the sizes below are the quick ones (reliability and start-up tests).
BASE = dict(
    token="iklan",
    class_word="disc",
    learning_rate=1e-3,
    alpha=0.0,
    seed=0,
    gradient_checkpointing=False,
    flip=False,
    noise_offset=0.0,
    gradient_accumulation=1,
)
QUICK = dict(steps=2, rank=2, batch_size=2, resolution=64, mixed_precision="no")
# The training node tests': the four 256 px subject photos in one batch, the precision the node picks.
PHOTOS = dict(rank=4, batch_size=4, resolution=256, mixed_precision="auto")


def train_graph(lora_name="rel_never", images=None, model="sdxl", count=4, size=64, **settings):
    """A TrainSubjectLoRA on the tiny SDXL (``model="sd15"``: the tiny SD1.5 with its CLIP and VAE; a
    TinySDXLVariant name: that MODEL with the tiny SDXL's CLIP and VAE). ``images(g)`` builds the node's image
    inputs in ``g`` ({"images": IMAGE, optionally "mask": MASK}); by default ``count`` random ``size``² images.
    ``settings`` override the quick ones."""
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySD15Loader" if model == "sd15" else "ImageAlchemyTest_TinySDXLLoader")
    model_out = (
        loader.out(0) if model in ("sdxl", "sd15") else g.node("ImageAlchemyTest_TinySDXLVariant", variant=model).out(0)
    )
    values = {**BASE, **QUICK, "lora_name": lora_name, **settings}
    inputs = images(g) if images else {"images": shaped_image(g, batch=count, height=size, width=size)}
    train = g.node(TRAIN, model=model_out, clip=loader.out(1), vae=loader.out(2), **inputs, **values)
    return g, train


def photo_inputs(names, with_mask=False):
    """``images`` for train_graph: the input folder's ``names`` in one batch (LoadImage; the first one's alpha as
    the mask with ``with_mask``)."""

    def build(g):
        loads = [g.node("LoadImage", image=n) for n in names]
        batch = loads[0].out(0)
        for load in loads[1:]:
            batch = g.node("ImageBatch", image1=batch, image2=load.out(0)).out(0)
        return {"images": batch, **({"mask": loads[0].out(1)} if with_mask else {})}

    return build


def photo_train_graph(names, lora_name, steps, with_mask=False, **settings):
    """The training node tests' graph: train_graph on the subject photos ``names``, their sizes (PHOTOS)."""
    return train_graph(lora_name, photo_inputs(names, with_mask), steps=steps, **{**PHOTOS, **settings})


def txt2img(lora=None, seed=3, model="sdxl"):
    """A 64² txt2img of the tiny model (``model``: sdxl or sd15; through LoraLoader with ``lora``), saved as
    ia_lora_check."""
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySD15Loader" if model == "sd15" else "ImageAlchemyTest_TinySDXLLoader")
    model, clip = loader.out(0), loader.out(1)
    if lora:
        lora_node = g.node("LoraLoader", model=model, clip=clip, lora_name=lora, strength_model=1.0, strength_clip=1.0)
        model, clip = lora_node.out(0), lora_node.out(1)
    pos = g.node("CLIPTextEncode", text="a photo of iklan disc", clip=clip)
    neg = g.node("CLIPTextEncode", text="", clip=clip)
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sampled = g.node(
        "KSampler",
        model=model,
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent.out(0),
        seed=seed,
        steps=3,
        cfg=4.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    save = g.node(
        "SaveImage",
        images=g.node("VAEDecode", samples=sampled.out(0), vae=loader.out(2)).out(0),
        filename_prefix="ia_lora_check",
    )
    return g, save


def loras_dir(comfy) -> Path:
    return comfy.base_dir / "models" / "loras"


def leftovers(comfy) -> list[str]:
    """Job folders in the trainer's work folder and partial LoRA files anywhere under models/loras (a lora_name
    may hold a subfolder)."""
    work = comfy.base_dir / "temp" / "image_alchemy_train"
    return sorted(p.name for p in work.glob("job-*")) + sorted(p.name for p in loras_dir(comfy).rglob("*.partial"))
