"""`make demo`: the two-stage pipeline, headless, through a real ComfyUI server and the shipped workflows.

1. learn a subject: five photos of a toy (drawn by tests/tiny/subjects.py) → TrainSubjectLoRA
   (example_workflows/1_learn_subject.json);
2. two scenes: unmodified model + class word → GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert
   (example_workflows/2_two_stage_generation.json).

With `--models DIR` (a ComfyUI models folder holding an SDXL checkpoint, GroundingDINO and SAM weights) it uses
them; otherwise it uses TINY RANDOM MODELS with the real architectures, says so, and labels every output: their
pictures are noise and only show that every stage runs end to end. Outputs and summary.{json,md} go to --out.
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
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

import workflows  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from tiny import factory, subjects  # noqa: E402

TOKEN, CLASS_WORD = "iklan", "toy"
SCENES = {"beach": f"a photo of a {CLASS_WORD} on a beach, golden hour",
          "kitchen": f"a photo of a {CLASS_WORD} on a wooden kitchen table"}
SHOWN_AS = {"ImageAlchemy_RareTokenPicker": "token_contact_sheet", "ImageAlchemy_TrainSubjectLoRA": "loss_curve",
            "ImageAlchemy_GroundedSAMMask": "mask_preview", "ImageAlchemy_DecayBlur": "blurred"}
TINY_BANNER = ("TINY RANDOM MODELS: no SDXL checkpoint / GroundingDINO / SAM weights were given (make demo "
               "MODELS=/path/to/ComfyUI/models). The pictures are noise from random weights; they show that every "
               "stage runs end to end.")


def find_real_models(models: Path | None) -> dict | None:
    """The first SDXL-looking checkpoint, GroundingDINO and SAM file in a ComfyUI models folder, or None."""
    if models is None:
        return None
    ckpts = sorted((models / "checkpoints").glob("*.safetensors"))
    ckpts = [p for p in ckpts if "xl" in p.name.lower()] or ckpts
    dinos = sorted(p for p in (models / "grounding-dino").glob("*") if p.suffix == ".pth" or (p / "config.json").exists())
    sams = sorted((models / "sams").glob("sam_vit_*.pth"))
    if not (ckpts and dinos and sams):
        print(f"[demo] {models}: need checkpoints/*.safetensors, grounding-dino/* and sams/sam_vit_*.pth; "
              f"found {len(ckpts)}, {len(dinos)}, {len(sams)}")
        return None
    return {"checkpoint": ckpts[0], "dino": dinos[0], "sam": sams[0]}


def prepare_base(base: Path, real: dict | None) -> dict:
    """Model folders and subject photos for the server; returns the model names the workflows should use."""
    models = base / "models"
    for sub in ("checkpoints", "grounding-dino", "sams", "loras"):
        (models / sub).mkdir(parents=True, exist_ok=True)
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
        return {"subject_images": names, "checkpoint": real["checkpoint"].name, "dino": real["dino"].name,
                "sam": real["sam"].name}
    import tiny_detectors

    factory.use_comfyui(COMFY_DIR)
    factory.write_tiny_sdxl(models / "tiny_sdxl")
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / "tiny-grounding-dino")
    tiny_detectors.write_sam(models / "sams" / "tiny_sam.pth")
    return {"subject_images": names, "dino": "tiny-grounding-dino", "sam": "tiny_sam.pth"}


def learn_prompt(server, names: dict, tiny: bool) -> dict:
    prompt = workflows.ui_to_api(workflows.load(ROOT / "example_workflows" / "1_learn_subject.json"),
                                 server.object_info())
    loads = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
    for node, image in zip(loads, names["subject_images"]):
        node["inputs"]["image"] = image
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names.get("checkpoint", "")
        if node["class_type"] == "ImageAlchemy_TrainSubjectLoRA":
            inputs.update(token=TOKEN, class_word=CLASS_WORD, lora_name=f"demo_{TOKEN}_{CLASS_WORD}")
            if tiny:
                inputs.update(steps=30, resolution=256, batch_size=4, learning_rate=1e-3)
        if node["class_type"] == "ImageAlchemy_RareTokenPicker" and tiny:
            inputs.update(width=64, height=64, steps=2, seeds_per_candidate=2)
    if tiny:
        workflows.adapt_for_tiny_models(prompt, dino=names["dino"], sam=names["sam"], size=256, steps=30)
    return prompt


def scene_prompt(server, names: dict, lora: str, scene: str, seed: int, tiny: bool) -> dict:
    prompt = workflows.ui_to_api(workflows.load(ROOT / "example_workflows" / "2_two_stage_generation.json"),
                                 server.object_info())
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
        workflows.adapt_for_tiny_models(prompt, dino=names["dino"], sam=names["sam"], size=128, steps=4)
    return prompt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder with real weights (optional)")
    parser.add_argument("--out", type=Path, default=ROOT / "demo_output", help="where images and the summary go")
    args = parser.parse_args(argv)

    real = find_real_models(args.models)
    tiny = real is None
    if tiny:
        print("[demo] " + TINY_BANNER)
    base = ROOT / ".cache" / "demo_base"
    shutil.rmtree(base, ignore_errors=True)
    (base / "input").mkdir(parents=True)
    names = prepare_base(base, real)
    packs = {"comfyui-image-alchemy": ROOT}
    if tiny:
        packs["image_alchemy_test_fixtures"] = ROOT / "tests" / "fixture_pack"
    server = ComfyServer(COMFY_DIR, base, packs, python=sys.executable)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    timings, files = {}, []

    def keep(entry, prompt, label):
        """Copies the images a prompt showed into --out, named after the node that made them."""
        for node_id, node_out in entry["outputs"].items():
            source = prompt[node_id]["inputs"].get("images", [None])[0]
            made_by = SHOWN_AS.get(prompt.get(str(source), {}).get("class_type")) or SHOWN_AS.get(
                prompt[node_id]["class_type"])  # a node that previews its own output
            for index, ref in enumerate(node_out.get("images", [])):
                src = base / ref.get("type", "output") / ref.get("subfolder", "") / ref["filename"]
                name = f"{made_by}_node{node_id}_{index}.png" if made_by else ref["filename"]
                dst = out / (("TINY_" if tiny else "") + f"{label}_{name}")
                shutil.copyfile(src, dst)
                files.append(str(dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst))

    t0 = time.monotonic()
    server.start()
    timings["server_start_s"] = round(time.monotonic() - t0, 1)
    try:
        t0 = time.monotonic()
        prompt = learn_prompt(server, names, tiny)
        keep(server.run(prompt, timeout=3600), prompt, "learn")
        timings["learn_subject_s"] = round(time.monotonic() - t0, 1)
        lora = f"demo_{TOKEN}_{CLASS_WORD}.safetensors"
        if not (base / "models" / "loras" / lora).exists():
            raise RuntimeError(f"training finished but {lora} is not in models/loras")
        for seed, (name, scene) in enumerate(SCENES.items(), start=1):
            t0 = time.monotonic()
            prompt = scene_prompt(server, names, lora, scene, seed, tiny)
            keep(server.run(prompt, timeout=3600), prompt, f"scene_{name}")
            timings[f"scene_{name}_s"] = round(time.monotonic() - t0, 1)
    finally:
        server.stop()
        shutil.copyfile(server.log_path, out / "server.log")

    summary = {"models": "tiny random (labelled TINY_)" if tiny else {k: str(v) for k, v in real.items()},
               "note": TINY_BANNER if tiny else "", "token": TOKEN, "class_word": CLASS_WORD,
               "seconds": timings, "images": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Image Alchemy demo", "", f"Models: {summary['models']}", ""] + ([f"> {TINY_BANNER}", ""] if tiny else [])
    lines += ["| stage | seconds |", "|---|---|"] + [f"| {k[:-2]} | {v} |" for k, v in timings.items()]
    lines += ["", "Images:"] + [f"- {f}" for f in files]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
