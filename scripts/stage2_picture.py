"""docs/two_stage_result.jpg: what the shipped two-stage workflow does to a scene, on the TINY RANDOM test models.

Runs example_workflows/2_two_stage_generation.json through a real ComfyUI server with the tiny models, a 512²
test texture as the stage-1 scene (tiny models paint noise, where a blur is hard to see) and a centred disc as
the subject (random tiny detectors find arbitrary shapes). DecayBlur and LoRAImg2ImgInsert run as shipped; a second
insert wired the old way (subject mask, no scene) shows the blurred ring the shipped wiring avoids. The repaint
region's edge is outlined in red. Run: `.venv/bin/python scripts/stage2_picture.py` (dev tool, not shipped).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))

import workflows  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from pack_import import TINY_PACK, TINY_PACK_NAME  # noqa: E402
from tiny_models import detectors as tiny_detectors  # noqa: E402
from tiny_models import factory  # noqa: E402
from tiny_models.lora import write_kohya_lora  # noqa: E402

SIZE, RADIUS, PANEL = 512, 0.15, 400
LABEL = (
    "TINY RANDOM MODELS (the tests' 1.2 M-parameter SDXL-architecture UNet): the repainted region is noise. "
    "Outside the red line the final image is the scene, bit for bit."
)


def texture(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(9 * xx) * 0.5 + 0.5, ((xx * 16).astype(int) + (yy * 16).astype(int)) % 2 * 1.0, yy], -1)
    img = 0.7 * img + 0.3 * np.random.default_rng(0).random((size, size, 3))
    return (img * 255).round().astype(np.uint8)


def prompt_for(server) -> dict:
    prompt = workflows.ui_to_api(
        workflows.load(ROOT / "example_workflows" / "2_two_stage_generation.json"), server.object_info()
    )
    workflows.adapt_for_tiny_models(prompt, dino="dino", sam="sam.pth", lora="subject.safetensors", steps=4)
    for node in prompt.values():
        kind = node["class_type"]
        if kind == "VAEDecode":
            node.update(class_type="LoadImage", inputs={"image": "scene.png"})
        elif kind == "ImageAlchemy_GroundedSAMMask":
            node.update(
                class_type="ImageAlchemyTest_DiscMask", inputs={"image": node["inputs"]["image"], "radius": RADIUS}
            )
        elif kind == "ImageAlchemy_LoRAImg2ImgInsert":
            node["inputs"]["resolution"] = 256
    insert_id = next(i for i, n in prompt.items() if n["class_type"] == "ImageAlchemy_LoRAImg2ImgInsert")
    blur_id = next(i for i, n in prompt.items() if n["class_type"] == "ImageAlchemy_DecayBlur")
    old = {k: v for k, v in prompt[insert_id]["inputs"].items() if k != "scene"}
    old["mask"] = prompt[blur_id]["inputs"]["mask"]
    prompt["old_insert"] = {"class_type": "ImageAlchemy_LoRAImg2ImgInsert", "inputs": old}
    for name, source in (("final", insert_id), ("old", "old_insert"), ("blurred", blur_id)):
        prompt[f"save_{name}"] = {
            "class_type": "SaveImage",
            "inputs": {"images": [source, 0], "filename_prefix": f"picture_{name}"},
        }
    prompt["region_image"] = {"class_type": "MaskToImage", "inputs": {"mask": [blur_id, 2]}}
    prompt["save_region"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["region_image", 0], "filename_prefix": "picture_region"},
    }
    return prompt


def outline(image: Image.Image, region: np.ndarray) -> Image.Image:
    edge = region & ~(np.roll(region, 1, 0) & np.roll(region, -1, 0) & np.roll(region, 1, 1) & np.roll(region, -1, 1))
    rgb = np.asarray(image.convert("RGB")).copy()
    rgb[edge] = [255, 0, 0]
    return Image.fromarray(rgb)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        models = base / "models"
        factory.use_comfyui(ROOT / ".cache" / "comfyui")
        tiny = factory.write_tiny_sdxl(models / "tiny_sdxl")
        tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / "dino")
        tiny_detectors.write_sam(models / "sams" / "sam.pth")
        write_kohya_lora(models / "loras" / "subject.safetensors", tiny["unet"])
        (base / "input").mkdir()
        scene = texture(SIZE)
        Image.fromarray(scene).save(base / "input" / "scene.png")
        server = ComfyServer(
            ROOT / ".cache" / "comfyui",
            base,
            {"comfyui-image-alchemy": ROOT, TINY_PACK_NAME: TINY_PACK},
            python=str(ROOT / ".venv" / "bin" / "python"),
        ).start()
        try:
            prompt = prompt_for(server)
            entry = server.run(prompt, timeout=1200)
            shot = {
                name: server.output_images(entry, f"save_{name}")[0] for name in ("final", "old", "blurred", "region")
            }
        finally:
            server.stop()
    import torch
    from pack_import import import_pack

    import_pack()
    from image_alchemy.alchemy import masks

    # The shipped insert grows DecayBlur's region by 8 px and feathers it by 16: that is what it repaints.
    region = torch.from_numpy((np.asarray(shot["region"].convert("L")) > 127).astype(np.float32))[None]
    repaint = masks.feather_mask(masks.grow_mask(region, 8), 16)[0].numpy() > 0
    panels = [
        ("stage-1 scene (test texture)", Image.fromarray(scene)),
        ("DecayBlur: the img2img start", shot["blurred"]),
        ("final, shipped wiring", outline(shot["final"], repaint)),
        ("final, old wiring: blurred ring", shot["old"]),
    ]
    head, foot = 34, 44
    sheet = Image.new("RGB", (PANEL * len(panels), PANEL + head + foot), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (title, image) in enumerate(panels):
        sheet.paste(image.convert("RGB").resize((PANEL, PANEL), Image.LANCZOS), (k * PANEL, head))
        draw.text((k * PANEL + 8, 10), title, fill="black")
    draw.rectangle((0, head + PANEL, sheet.width, sheet.height), fill="black")
    draw.text((8, head + PANEL + 14), LABEL, fill="white")
    out = ROOT / "docs" / "two_stage_result.jpg"
    sheet.save(out, quality=88)
    print("wrote", out)


if __name__ == "__main__":
    main()
