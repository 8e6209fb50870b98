"""`make demo`: the two-stage pipeline, headless, through a real ComfyUI server and the shipped workflows.

1. learn a subject: five photos of a toy (drawn by scripts/devkit/tiny_models/subjects.py) → TrainSubjectLoRA
   (example_workflows/1_learn_subject.json);
2. two scenes: unmodified model + class word → GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert
   (example_workflows/2_two_stage_generation.json).

With `--models DIR` (a ComfyUI models folder holding an SDXL checkpoint, GroundingDINO and SAM weights) it uses
them. Otherwise it uses the TOY WORLD's trained tiny models (toy_world/models, `make toy-world`: the SDXL
architecture, GroundingDINO and SAM) with a toy-world subject (a blue ball with a yellow centre, 5 views, 64 px),
says so and labels every output TOY_: the pictures show a subject learnt, the class object found by the trained
detectors and the subject repainted there, in that 64 px world; summary.png puts them on one labelled sheet and
summary.json holds what was measured on them (the mask against the drawn object, the pixels changed outside the
repaint region, the measuring net's reading of the repainted region). With `--random` (or without
toy_world/models) it uses tiny random models, whose pictures are noise (labelled TINY_). Outputs and
summary.{json,md,png} go to --out.
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
sys.path.insert(0, str(ROOT / "scripts"))

import demo_sheet  # noqa: E402
import numpy as np  # noqa: E402
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
# What an image shows, by the node and output that made it (None: the node's own preview).
SHOWN_AS = {
    ("ImageAlchemy_RareTokenPicker", 1): "token_contact_sheet",
    ("ImageAlchemy_TrainSubjectLoRA", 1): "loss_curve",
    ("ImageAlchemy_TrainSubjectLoRA", 2): "sample_previews",
    ("ImageAlchemy_GroundedSAMMask", None): "mask_preview",
    ("ImageAlchemy_DecayBlur", None): "blurred",
}
TINY_BANNER = (
    "TINY RANDOM MODELS: no SDXL checkpoint / GroundingDINO / SAM weights were given (make demo "
    "MODELS=/path/to/ComfyUI/models). The pictures are noise from random weights; they show that every "
    "stage runs end to end."
)


TOY_BANNER = (
    "TOY WORLD MODELS: no SDXL checkpoint / GroundingDINO / SAM weights were given (make demo "
    "MODELS=/path/to/ComfyUI/models). The tiny SDXL-architecture UNet and TAESD VAE, a tiny GroundingDINO and a "
    "tiny SAM (the real architectures and file formats) were trained on a 64 px procedural world (toy_world/, "
    "make toy-world); the subject is one of its objects."
)
# Pixel sizes in the shipped workflow (made for 1024 px pictures) scaled to the toy world's 64 px.
TOY_SCALE = 64 / 1024
TOY_DINO, TOY_SAM = "toy_grounding_dino", "toy_sam.safetensors"
# The toy GroundingDINO places its best box on the world's object but does not tell the classes apart: present and
# absent class words score alike, about 0.3, around the workflow's 0.3 (bench/toy_world.py, toy_detect_*).
TOY_BOX_THRESHOLD = 0.2  # toy_world.detectors.TOY_THRESHOLD, what bench/toy_world.py measures it at
TOY_DETECTOR_NOTE = (
    "The toy GroundingDINO finds the picture's object but does not yet tell 'ball' from 'cube' (present and absent "
    f"class words score alike, ~0.3), so GroundedSAMMask runs at box_threshold {TOY_BOX_THRESHOLD} here, not the "
    "workflow's 0.3."
)


def toy_world_package():
    """toy_world/ imported by path, with the pack as ``image_alchemy`` (its measuring code uses the pack): the
    repository root stays off sys.path (nodes/)."""
    import importlib.util

    from pack_import import import_pack

    import_pack()
    if "toy_world" not in sys.modules:
        folder = ROOT / "toy_world"
        spec = importlib.util.spec_from_file_location(
            "toy_world", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["toy_world"]


def toy_world_module():
    """toy_world/world.py: the world's drawing and its subjects."""
    import importlib

    toy_world_package()
    return importlib.import_module("toy_world.world")


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
        detectors = toy_detectors()
        shutil.copytree(TOY_MODELS / detectors.DINO_FOLDER, models / "grounding-dino" / TOY_DINO)
        shutil.copyfile(TOY_MODELS / detectors.SAM_FILE, models / "sams" / TOY_SAM)
        return {"subject_images": names, "dino": TOY_DINO, "sam": TOY_SAM}
    factory.write_tiny_sdxl(models / "tiny_sdxl")
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / "tiny-grounding-dino")
    tiny_detectors.write_sam(models / "sams" / "tiny_sam.pth")
    return {"subject_images": names, "dino": "tiny-grounding-dino", "sam": "tiny_sam.pth"}


def toy_detectors():
    import importlib

    toy_world_package()
    return importlib.import_module("toy_world.detectors")


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
    if toy:
        use_trained_detectors(prompt)
    return prompt


def use_trained_detectors(prompt: dict) -> None:
    """The toy world's detectors: GroundedSAMMask at TOY_BOX_THRESHOLD (see TOY_DETECTOR_NOTE; the tiny random
    ones need 0) says when it finds nothing; the pixel sizes (grow, feather, blur) are scaled to 64 px."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "ImageAlchemy_GroundedSAMMask":
            inputs.update(
                box_threshold=TOY_BOX_THRESHOLD, text_threshold=TOY_BOX_THRESHOLD, if_nothing_found="empty mask"
            )
        if kind == "ImageAlchemy_DecayBlur":
            inputs.update(kernel_size=1 + 2 * round(inputs["kernel_size"] * TOY_SCALE / 2))
            inputs.update(sigma=inputs["sigma"] * TOY_SCALE)
        for key in ("grow", "feather"):
            if kind.startswith("ImageAlchemy_") and isinstance(inputs.get(key), int) and inputs[key] > 0:
                inputs[key] = max(1, round(inputs[key] * TOY_SCALE))


def add_mask_outputs(prompt: dict) -> dict[str, str]:
    """SaveImage nodes for GroundedSAMMask's mask and the insert's mask (the repaint region before the insert's
    grow and feather): the demo measures on them. Returns {"mask" | "region": SaveImage node id}."""
    ids = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "ImageAlchemy_GroundedSAMMask":
            ids["mask"] = _save_mask(prompt, "mask", [node_id, 0])
        elif node["class_type"] == "ImageAlchemy_LoRAImg2ImgInsert":
            ids["region"] = _save_mask(prompt, "region", node["inputs"]["mask"])
    return ids


def _save_mask(prompt: dict, what: str, source: list) -> str:
    prompt[f"demo_{what}_image"] = {"class_type": "MaskToImage", "inputs": {"mask": source}}
    prompt[f"demo_{what}_save"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [f"demo_{what}_image", 0], "filename_prefix": f"demo_{what}"},
    }
    return f"demo_{what}_save"


def node_of(prompt: dict, class_type: str) -> str:
    return next(node_id for node_id, node in prompt.items() if node["class_type"] == class_type)


def shown_images(entry: dict, base: Path, node_id: str) -> list[Path]:
    """The files a node of a finished prompt showed or saved."""
    refs = entry["outputs"].get(node_id, {}).get("images", [])
    return [base / r.get("type", "output") / r.get("subfolder", "") / r["filename"] for r in refs]


def saved_by(prompt: dict, source_type: str, slot: int = 0) -> str:
    """The SaveImage / PreviewImage node showing output ``slot`` of the node of ``source_type``."""
    source = node_of(prompt, source_type)
    return next(
        node_id
        for node_id, node in prompt.items()
        if node["class_type"] in ("SaveImage", "PreviewImage") and node["inputs"].get("images") == [source, slot]
    )


def scene_figures(scene, mask, region, final, grow: int, subject) -> dict:
    """What the toy demo measures on one scene (toy_world.figures.demo_scene_figures)."""
    import importlib

    toy_world_package()
    figures = importlib.import_module("toy_world.figures")
    return figures.demo_scene_figures(scene, mask, region, final, grow, subject, TOY_MODELS)


def read_rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))  # a writable copy (the measuring net wraps it in a tensor)


def measure_scene(base: Path, prompt: dict, entry: dict, saves: dict) -> tuple[dict, tuple[Path, ...]]:
    """A finished toy scene prompt's figures (scene_figures) and its pictures (scene, mask preview, blurred,
    final)."""
    scene = shown_images(entry, base, saved_by(prompt, "VAEDecode"))[0]
    final = shown_images(entry, base, saved_by(prompt, "ImageAlchemy_LoRAImg2ImgInsert"))[0]
    preview = shown_images(entry, base, node_of(prompt, "ImageAlchemy_GroundedSAMMask"))[0]
    blurred = shown_images(entry, base, node_of(prompt, "ImageAlchemy_DecayBlur"))[0]
    mask = read_rgb(shown_images(entry, base, saves["mask"])[0])[..., 0] / 255.0
    region = read_rgb(shown_images(entry, base, saves["region"])[0])[..., 0] / 255.0
    insert = prompt[node_of(prompt, "ImageAlchemy_LoRAImg2ImgInsert")]["inputs"]
    subject = toy_world_module().SUBJECTS[0]
    figures = scene_figures(read_rgb(scene), mask, region, read_rgb(final), insert["grow"] + insert["feather"], subject)
    return figures, (scene, preview, blurred, final)


def toy_summary(base: Path, out: Path, names: dict, samples: list[Path], scenes: dict) -> dict:
    """The toy run's figures per scene (scene_figures) and its summary sheet, summary.png."""
    photos = [Image.open(base / "input" / n) for n in names["subject_images"]]
    sections = [
        (
            f"1. The subject: five photos of one toy-world {CLASS_WORD} (blue, yellow centre)",
            [demo_sheet.panel(p, f"photo {i + 1}", 160) for i, p in enumerate(photos)],
            "",
        ),
        (
            f"2. Learnt: TrainSubjectLoRA on the photos, token '{TOKEN}' + class word '{CLASS_WORD}'",
            [demo_sheet.panel(Image.open(p), f"'{TOKEN} {CLASS_WORD}' samples while training", 320) for p in samples],
            "",
        ),
    ]
    measured = {}
    for k, (name, (text, prompt, entry, saves)) in enumerate(scenes.items(), start=3):
        figures, (scene, preview, blurred, final) = measure_scene(base, prompt, entry, saves)
        measured[name] = figures
        sections.append(
            (
                f"{k}. Scene '{name}': stage 1 draws '{text}'; stage 2 repaints the {CLASS_WORD} as the subject",
                [
                    demo_sheet.panel(Image.open(scene), f"stage 1: '{text}'", 256),
                    demo_sheet.panel(Image.open(preview), f"GroundedSAMMask '{CLASS_WORD}'", 256),
                    demo_sheet.panel(Image.open(blurred), "DecayBlur (exponential decay)", 256),
                    demo_sheet.panel(Image.open(final), f"final: LoRAImg2ImgInsert '{TOKEN} {CLASS_WORD}'", 256),
                ],
                f"mask vs the drawn {CLASS_WORD}: IoU {figures['mask_iou_with_drawn_object']:.2f}; pixels changed "
                f"outside the repaint region: {figures['pixels_changed_outside_repaint']}; the measuring net reads "
                f"the repainted region as {figures['read_in_repainted_region']} "
                f"({'the subject' if figures['read_as_subject'] else 'not the subject'}'s colours)",
            )
        )
    label = "TOY WORLD (not SDXL): tiny models trained on a 64 px procedural world"
    demo_sheet.sheet(label, f"{TOY_BANNER} {TOY_DETECTOR_NOTE}", sections).save(out / "summary.png")
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder with real weights (optional)")
    parser.add_argument("--random", action="store_true", help="tiny random models instead of the toy world's")
    parser.add_argument("--out", type=Path, default=ROOT / "demo_output", help="where images and the summary go")
    args = parser.parse_args(argv)

    real = find_real_models(args.models)
    tiny = real is None
    toy = tiny and not args.random and (TOY_MODELS / factory.UNET_FILE).exists()
    banner, label = (f"{TOY_BANNER} {TOY_DETECTOR_NOTE}", "TOY_") if toy else (TINY_BANNER, "TINY_")
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
        for node_id in entry["outputs"]:
            source = prompt[node_id]["inputs"].get("images", [None, None])
            made_by = SHOWN_AS.get((prompt.get(str(source[0]), {}).get("class_type"), source[1])) or SHOWN_AS.get(
                (prompt[node_id]["class_type"], None)
            )  # a node that previews its own output
            for index, src in enumerate(shown_images(entry, base, node_id)):
                name = f"{made_by}_node{node_id}_{index}.png" if made_by else src.name
                dst = out / ((prefix if tiny else "") + f"{label}_{name}")
                shutil.copyfile(src, dst)
                files.append(str(dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst))

    t0 = time.monotonic()
    server.start()
    timings["server_start_s"] = round(time.monotonic() - t0, 1)
    scenes = {}
    try:
        t0 = time.monotonic()
        prompt = learn_prompt(server, names, tiny, toy)
        learnt = server.run(prompt, timeout=3600)
        keep(learnt, prompt, "learn")
        samples = shown_images(learnt, base, saved_by(prompt, "ImageAlchemy_TrainSubjectLoRA", 2))
        timings["learn_subject_s"] = round(time.monotonic() - t0, 1)
        lora = f"demo_{TOKEN}_{CLASS_WORD}.safetensors"
        if not (base / "models" / "loras" / lora).exists():
            raise RuntimeError(f"training finished but {lora} is not in models/loras")
        for seed, (name, scene) in enumerate(SCENES.items(), start=1):
            t0 = time.monotonic()
            prompt = scene_prompt(server, names, lora, scene, seed, tiny, toy)
            saves = add_mask_outputs(prompt) if toy else {}
            entry = server.run(prompt, timeout=3600)
            keep(entry, prompt, f"scene_{name}")
            scenes[name] = (scene, prompt, entry, saves)
            timings[f"scene_{name}_s"] = round(time.monotonic() - t0, 1)
    finally:
        server.stop()
        shutil.copyfile(server.log_path, out / "server.log")

    measured = {}
    if toy:
        measured = toy_summary(base, out, names, samples, scenes)
        files.append(str((out / "summary.png").relative_to(ROOT) if out.is_relative_to(ROOT) else out / "summary.png"))
    models_used = "toy world (labelled TOY_)" if toy else "tiny random (labelled TINY_)"
    summary = {
        "models": models_used if tiny else {k: str(v) for k, v in real.items()},
        "note": banner if tiny else "",
        "token": TOKEN,
        "class_word": CLASS_WORD,
        "seconds": timings,
        "images": files,
        **({"scenes": measured} if measured else {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Image Alchemy demo", "", f"Models: {summary['models']}", ""] + ([f"> {banner}", ""] if tiny else [])
    lines += ["| stage | seconds |", "|---|---|"] + [f"| {k[:-2]} | {v} |" for k, v in timings.items()]
    for name, figures in measured.items():
        lines += ["", f"Scene '{name}': " + ", ".join(f"{k} {v}" for k, v in figures.items())]
    lines += ["", "Images:"] + [f"- {f}" for f in files]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
