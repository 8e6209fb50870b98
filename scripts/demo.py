"""`make demo`: the two-stage pipeline, headless, through a real ComfyUI server and the shipped workflows.

1. learn a subject: five photos of a toy (drawn by scripts/devkit/tiny_models/subjects.py) → TrainSubjectLoRA
   (example_workflows/1_learn_subject.json);
2. two scenes: unmodified model + class word → GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert
   (example_workflows/2_two_stage_generation.json).

With `--models DIR` (a ComfyUI models folder holding an SDXL checkpoint, GroundingDINO and SAM weights) it uses
them. Otherwise it uses the TOY WORLD's trained tiny SDXL-architecture models (toy_world/models, `make toy-world`)
with a toy-world subject (a blue ball with a yellow centre, 5 views, 64 px), says so and labels every output TOY_:
the pictures show a subject learnt and inserted into a scene of that 64 px world. GroundingDINO and SAM stay tiny
RANDOM models there (the toy world trains none), so the mask they give is arbitrary. With `--random` (or without
toy_world/models) it uses tiny random models, whose pictures are noise (labelled TINY_). Outputs and
summary.{json,md} go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The ComfyUI tree `make demo COMFYUI=...` provisioned (the default one otherwise).
COMFY_DIR = Path(os.environ.get("IMAGE_ALCHEMY_COMFYUI", ROOT / ".cache" / "comfyui"))
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))

import workflows  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from pack_import import TINY_PACK, TINY_PACK_NAME  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_models import factory, subjects  # noqa: E402

TOY_MODELS = ROOT / "toy_world" / "models"

TOKEN, CLASS_WORD = "iklan", "toy"
SCENES = {
    "beach": f"a photo of a {CLASS_WORD} on a beach, golden hour",
    "kitchen": f"a photo of a {CLASS_WORD} on a wooden kitchen table",
}
SHOWN_AS = {
    "ImageAlchemy_RareTokenPicker": "token_contact_sheet",
    "ImageAlchemy_TrainSubjectLoRA": "loss_curve",
    "ImageAlchemy_GroundedSAMMask": "mask_preview",
    "ImageAlchemy_DecayBlur": "blurred",
}
TINY_BANNER = (
    "TINY RANDOM MODELS: no SDXL checkpoint / GroundingDINO / SAM weights were given (make demo "
    "MODELS=/path/to/ComfyUI/models). The pictures are noise from random weights; they show that every "
    "stage runs end to end."
)


TOY_BANNER = (
    "TOY WORLD MODELS: no SDXL checkpoint / GroundingDINO / SAM weights were given (make demo "
    "MODELS=/path/to/ComfyUI/models). The tiny SDXL-architecture UNet and TAESD VAE were trained on a 64 px "
    "procedural world (toy_world/, make toy-world); the subject is one of its objects. GroundingDINO and SAM "
    "are tiny random models, so the repaint mask is arbitrary."
)


def toy_world_module():
    """toy_world/world.py (numpy only), imported by path: the repository root stays off sys.path (nodes/)."""
    import importlib.util

    if "toy_world_world" not in sys.modules:
        spec = importlib.util.spec_from_file_location("toy_world_world", ROOT / "toy_world" / "world.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["toy_world_world"]


def use_toy_world() -> None:
    """Swaps the demo's subject, token, class word and scenes for the toy world's."""
    global TOKEN, CLASS_WORD, SCENES
    subject = toy_world_module().SUBJECTS[0]
    TOKEN, CLASS_WORD = subject.token, subject.thing.cls
    SCENES = {"sand": f"a photo of a {CLASS_WORD} on sand", "grass": f"a photo of a {CLASS_WORD} on grass"}


def find_real_models(models: Path | None) -> dict | None:
    """The first SDXL-looking checkpoint, GroundingDINO and SAM file in a ComfyUI models folder, or None."""
    if models is None:
        return None
    ckpts = sorted((models / "checkpoints").glob("*.safetensors"))
    ckpts = [p for p in ckpts if "xl" in p.name.lower()] or ckpts
    dinos = sorted(
        p for p in (models / "grounding-dino").glob("*") if p.suffix == ".pth" or (p / "config.json").exists()
    )
    sams = sorted((models / "sams").glob("sam_vit_*.pth"))
    if not (ckpts and dinos and sams):
        print(
            f"[demo] {models}: need checkpoints/*.safetensors, grounding-dino/* and sams/sam_vit_*.pth; "
            f"found {len(ckpts)}, {len(dinos)}, {len(sams)}"
        )
        return None
    return {"checkpoint": ckpts[0], "dino": dinos[0], "sam": sams[0]}


def prepare_base(base: Path, real: dict | None, toy: bool = False) -> dict:
    """Model folders and subject photos for the server; returns the model names the workflows should use."""
    models = base / "models"
    for sub in ("checkpoints", "grounding-dino", "sams", "loras"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    if toy:
        world = toy_world_module()
        images = [view.image for view in world.subject_views(world.SUBJECTS[0])]
    else:
        images, _ = subjects.subject_set(count=5, size=512 if real else 256)
    names = []
    for i, rgb in enumerate(images):
        names.append(f"subject_{i}.png")
        Image.fromarray(rgb).save(base / "input" / names[-1])
    if real:
        for key, sub in (("checkpoint", "checkpoints"), ("dino", "grounding-dino"), ("sam", "sams")):
            (models / sub / real[key].name).symlink_to(real[key], target_is_directory=real[key].is_dir())
        if real["dino"].suffix == ".pth" and (real["dino"].parent / "bert-base-uncased").exists():
            (models / "grounding-dino" / "bert-base-uncased").symlink_to(real["dino"].parent / "bert-base-uncased")
        return {
            "subject_images": names,
            "checkpoint": real["checkpoint"].name,
            "dino": real["dino"].name,
            "sam": real["sam"].name,
        }
    from tiny_models import detectors as tiny_detectors

    factory.use_comfyui(COMFY_DIR)
    if toy:
        (models / "tiny_sdxl").mkdir(parents=True)
        for name in (factory.UNET_FILE, factory.CLIP_FILE, factory.VAE_FILE):
            shutil.copyfile(TOY_MODELS / name, models / "tiny_sdxl" / name)
    else:
        factory.write_tiny_sdxl(models / "tiny_sdxl")
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / "tiny-grounding-dino")
    tiny_detectors.write_sam(models / "sams" / "tiny_sam.pth")
    return {"subject_images": names, "dino": "tiny-grounding-dino", "sam": "tiny_sam.pth"}


def learn_prompt(server, names: dict, tiny: bool, toy: bool = False) -> dict:
    prompt = workflows.ui_to_api(
        workflows.load(ROOT / "example_workflows" / "1_learn_subject.json"), server.object_info()
    )
    loads = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
    for node, image in zip(loads, names["subject_images"]):
        node["inputs"]["image"] = image
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names.get("checkpoint", "")
        if node["class_type"] == "ImageAlchemy_TrainSubjectLoRA":
            inputs.update(token=TOKEN, class_word=CLASS_WORD, lora_name=f"demo_{TOKEN}_{CLASS_WORD}")
            if toy:  # the settings toy_world/train.py trains its subject LoRAs with
                inputs.update(
                    steps=300, resolution=64, batch_size=5, learning_rate=2e-3, rank=4, gradient_accumulation=1
                )
            elif tiny:
                inputs.update(steps=30, resolution=256, batch_size=4, learning_rate=1e-3)
        if node["class_type"] == "ImageAlchemy_RareTokenPicker" and tiny:
            inputs.update(width=64, height=64, steps=20 if toy else 2, seeds_per_candidate=4 if toy else 2)
    if tiny:
        workflows.adapt_for_tiny_models(
            prompt, dino=names["dino"], sam=names["sam"], size=64 if toy else 256, steps=300 if toy else 30
        )
    return prompt


def scene_prompt(server, names: dict, lora: str, scene: str, seed: int, tiny: bool, toy: bool = False) -> dict:
    prompt = workflows.ui_to_api(
        workflows.load(ROOT / "example_workflows" / "2_two_stage_generation.json"), server.object_info()
    )
    for node in prompt.values():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names.get("checkpoint", "")
        elif kind == "ImageAlchemy_GroundingDinoLoader":
            inputs["model_name"] = names["dino"]
        elif kind == "ImageAlchemy_SAMLoader":
            inputs["model_name"] = names["sam"]
        elif kind == "ImageAlchemy_GroundedSAMMask":
            inputs["prompt"] = CLASS_WORD
        elif kind == "ImageAlchemy_LoRAImg2ImgInsert":
            inputs.update(lora_name=lora, seed=seed)
        elif kind == "KSampler":
            inputs["seed"] = seed
        elif kind == "CLIPTextEncode" and "iklan" in str(inputs.get("text")):
            inputs["text"] = scene.replace(f"a {CLASS_WORD}", f"{TOKEN} {CLASS_WORD}")
        elif kind == "CLIPTextEncode" and "on a beach" in str(inputs.get("text")):
            inputs["text"] = scene
        elif kind == "SaveImage":
            inputs["filename_prefix"] = inputs["filename_prefix"].replace("image_alchemy/", f"demo_{seed}_")
    if tiny:
        workflows.adapt_for_tiny_models(
            prompt, dino=names["dino"], sam=names["sam"], size=64 if toy else 128, steps=20 if toy else 4
        )
    return prompt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder with real weights (optional)")
    parser.add_argument("--random", action="store_true", help="tiny random models instead of the toy world's")
    parser.add_argument("--out", type=Path, default=ROOT / "demo_output", help="where images and the summary go")
    args = parser.parse_args(argv)

    real = find_real_models(args.models)
    tiny = real is None
    toy = tiny and not args.random and (TOY_MODELS / factory.UNET_FILE).exists()
    banner, label = (TOY_BANNER, "TOY_") if toy else (TINY_BANNER, "TINY_")
    if toy:
        use_toy_world()
    if tiny:
        print("[demo] " + banner)
    base = ROOT / ".cache" / "demo_base"
    shutil.rmtree(base, ignore_errors=True)
    (base / "input").mkdir(parents=True)
    names = prepare_base(base, real, toy)
    packs = {"comfyui-image-alchemy": ROOT}
    if tiny:
        packs[TINY_PACK_NAME] = TINY_PACK
    server = ComfyServer(COMFY_DIR, base, packs, python=sys.executable)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    timings, files = {}, []
    prefix = label

    def keep(entry, prompt, label):
        """Copies the images a prompt showed into --out, named after the node that made them."""
        for node_id, node_out in entry["outputs"].items():
            source = prompt[node_id]["inputs"].get("images", [None])[0]
            made_by = SHOWN_AS.get(prompt.get(str(source), {}).get("class_type")) or SHOWN_AS.get(
                prompt[node_id]["class_type"]
            )  # a node that previews its own output
            for index, ref in enumerate(node_out.get("images", [])):
                src = base / ref.get("type", "output") / ref.get("subfolder", "") / ref["filename"]
                name = f"{made_by}_node{node_id}_{index}.png" if made_by else ref["filename"]
                dst = out / ((prefix if tiny else "") + f"{label}_{name}")
                shutil.copyfile(src, dst)
                files.append(str(dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst))

    t0 = time.monotonic()
    server.start()
    timings["server_start_s"] = round(time.monotonic() - t0, 1)
    try:
        t0 = time.monotonic()
        prompt = learn_prompt(server, names, tiny, toy)
        keep(server.run(prompt, timeout=3600), prompt, "learn")
        timings["learn_subject_s"] = round(time.monotonic() - t0, 1)
        lora = f"demo_{TOKEN}_{CLASS_WORD}.safetensors"
        if not (base / "models" / "loras" / lora).exists():
            raise RuntimeError(f"training finished but {lora} is not in models/loras")
        for seed, (name, scene) in enumerate(SCENES.items(), start=1):
            t0 = time.monotonic()
            prompt = scene_prompt(server, names, lora, scene, seed, tiny, toy)
            keep(server.run(prompt, timeout=3600), prompt, f"scene_{name}")
            timings[f"scene_{name}_s"] = round(time.monotonic() - t0, 1)
    finally:
        server.stop()
        shutil.copyfile(server.log_path, out / "server.log")

    models_used = "toy world (labelled TOY_)" if toy else "tiny random (labelled TINY_)"
    summary = {
        "models": models_used if tiny else {k: str(v) for k, v in real.items()},
        "note": banner if tiny else "",
        "token": TOKEN,
        "class_word": CLASS_WORD,
        "seconds": timings,
        "images": files,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Image Alchemy demo", "", f"Models: {summary['models']}", ""] + ([f"> {banner}", ""] if tiny else [])
    lines += ["| stage | seconds |", "|---|---|"] + [f"| {k[:-2]} | {v} |" for k, v in timings.items()]
    lines += ["", "Images:"] + [f"- {f}" for f in files]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
