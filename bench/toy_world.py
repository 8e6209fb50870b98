"""The method measured on the toy world (toy_world/: trained tiny SDXL-architecture models), one process.

Prints `name: value` lines:
- toy_stage1_class_accuracy: the measuring net's class reading of 'a photo of a <class>' (chance 0.25);
- toy_subject_similarity_lora / _base: 'a photo of <token> <class>' with the committed subject LoRA vs without:
  identity-embedding similarity to the subject's 5 views (the measuring net's joint look distribution,
  toy_world/measure.py; toy_subject_similarity_concat_*: its three heads concatenated), and toy_subject_dino_*:
  DINO by alchemy.metrics.evaluate with the measuring net as the DINO backbone;
  toy_subject_similarity_centred_*: the same with both embeddings centred on the class's mean (world instances of
  the class: what they share counts 0), toy_subject_identified_*: share of images read as the subject exactly
  (main colour, second colour and pattern);
- toy_insert_*: stage 1 (base, class word) → object mask → stage 2 (LoRA, token; LoRAImg2ImgInsert's
  alchemy.crop_stitch steps): subject similarity inside the mask after vs before, and the largest change outside the
  repaint region (0..255);
- toy_detect_*: the trained tiny GroundingDINO + SAM (GroundedSAMMask's computation, the workflow's thresholds) on
  held-out world pictures prompted with the object's class word: box recall at IoU 0.5, mean mask IoU with the
  drawn object, and the share of pictures that get a box for a class they do not show; toy_detect_*_at_0_2: the
  same at box and text threshold 0.2 (what the demo uses: the toy GroundingDINO does not tell the classes apart,
  and its scores straddle the workflow's 0.3); toy_insert_detected_*: the toy_insert_* figures with that mask
  (threshold 0.2) in the loop, grown 2 px as the drawn one is;
- toy_drift_<option>_vs_plain / toy_subject_similarity_<option>_vs_plain: LoRAs trained here with each drift-free
  option (the same steps as plain, each with the training seeds figures.OPTION_SEEDS, figures their mean);
  drift = mean squared pixel difference from the base model's images of class prompts without the token (same
  seeds); toy_drift_<option>_spread: (max − min) / mean of the seeds' drifts; toy_leak_<option>: share of
  'a photo of a <class>' pictures read with the subject's main colour (the class word drawing the subject);
- toy_token_prior_*: RareTokenPicker's similarity measure for the class word, the empty prompt, a word the world
  never uses, and another world word (calibrated priors too).
Run: .venv/bin/python bench/toy_world.py [--seeds 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from statistics import mean

import torch

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = Path(os.environ.get("IMAGE_ALCHEMY_COMFYUI", ROOT / ".cache" / "comfyui"))


def import_as_package(name: str, folder: Path):
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="images per prompt")
    parser.add_argument("--scenes", type=int, default=8, help="two-stage insertions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", type=Path, default=ROOT / "toy_world" / "models")
    parser.add_argument("--lora-steps", type=int, default=0, help="steps of the option LoRAs (0: the committed one's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import_as_package("image_alchemy", ROOT)
    import_as_package("toy_world", ROOT / "toy_world")
    from image_alchemy.alchemy.backbones import DinoBackbone
    from image_alchemy.training.lora_file import read_metadata
    from safetensors.torch import load_file

    from toy_world import detectors, figures, measure, models, world

    models.use_comfyui(COMFY_DIR)
    folder = args.models
    started = time.perf_counter()
    pipe = models.pipeline(folder, COMFY_DIR)
    net = measure.MeasuringNet(folder / "measure_vit")
    dino = DinoBackbone.load(str(folder / "measure_vit"))
    subject = world.SUBJECTS[0]
    refs = figures.views(subject)
    out = {}

    out["toy_stage1_class_accuracy"], _ = figures.class_accuracy(pipe, net, args.seeds)
    out["toy_stage1_class_chance"] = 1 / len(world.CLASSES)

    lora_file = measure.lora_path(folder, subject)
    lora = measure.lora_pipe(pipe, folder, lora_file)
    base_images = figures.subject_images(pipe, subject, args.seeds)
    lora_images = figures.subject_images(lora, subject, args.seeds)
    out["toy_subject_similarity_base"] = net.similarity(base_images, refs)
    out["toy_subject_similarity_lora"] = net.similarity(lora_images, refs)
    out["toy_subject_similarity_lora_vs_base"] = out["toy_subject_similarity_lora"] / out["toy_subject_similarity_base"]
    out["toy_subject_similarity_real"] = net.similarity(refs, refs)
    # The earlier form of the embedding (the three heads concatenated: every picture scores ~0.4 there).
    out["toy_subject_similarity_concat_base"] = net.similarity(base_images, refs, joint=False)
    out["toy_subject_similarity_concat_lora"] = net.similarity(lora_images, refs, joint=False)
    out["toy_subject_similarity_concat_real"] = net.similarity(refs, refs, joint=False)
    # Beside the figures: similarity with the class's shared part taken out, and exact identification.
    centre = net.class_centre(subject.thing.cls)
    out["toy_subject_similarity_centred_base"] = net.similarity(base_images, refs, centre)
    out["toy_subject_similarity_centred_lora"] = net.similarity(lora_images, refs, centre)
    out["toy_subject_similarity_centred_real"] = net.similarity(refs, refs, centre)
    out["toy_subject_identified_base"] = net.identified(base_images, subject.thing)
    out["toy_subject_identified_lora"] = net.identified(lora_images, subject.thing)
    out["toy_subject_identified_real"] = net.identified(refs, subject.thing)
    out["toy_subject_dino_base"], out["toy_subject_dino_real"] = figures.dino_similarity(base_images, refs, dino)
    out["toy_subject_dino_lora"], _ = figures.dino_similarity(lora_images, refs, dino)

    out.update(figures.insert_figures(pipe, lora, net, subject, args.scenes))
    # The detectors: GroundedSAMMask's computation on held-out world pictures, then in the insert's loop.
    detector, sam = detectors.load(folder)
    out.update(detectors.detection_figures(detector, sam, count=8 * args.scenes))
    out.update(detectors.detection_figures(detector, sam, count=8 * args.scenes, threshold=detectors.TOY_THRESHOLD))
    find = figures.detected_mask(
        detector, sam, box_threshold=detectors.TOY_THRESHOLD, text_threshold=detectors.TOY_THRESHOLD
    )
    out.update(figures.insert_figures(pipe, lora, net, subject, args.scenes, find=find, name="insert_detected"))

    steps = args.lora_steps or int(read_metadata(lora_file)["ss_max_train_steps"])
    base_class = figures.class_prompt_images(pipe, args.seeds // 2)
    out["toy_leak_base"] = figures.subject_leak(pipe, net, subject, 2 * args.seeds)
    rows = {}
    for name in figures.OPTIONS:
        runs = []
        for seed in figures.OPTION_SEEDS:
            unet, seconds, kohya = figures.train_option(folder, pipe, subject, name, steps, seed)
            if name == "plain" and seed == 0:  # the same training as the committed LoRA's: the same bytes?
                committed = load_file(str(lora_file))
                out["toy_plain_lora_bit_identical_to_committed"] = int(
                    committed.keys() == kohya.keys() and all(torch.equal(committed[k], kohya[k]) for k in kohya)
                )
            tuned = measure.with_unet(pipe, unet)
            runs.append(
                (
                    figures.drift(base_class, figures.class_prompt_images(tuned, args.seeds // 2)),
                    net.similarity(figures.subject_images(tuned, subject, args.seeds), refs),
                    figures.subject_leak(tuned, net, subject, 2 * args.seeds),
                    seconds,
                )
            )
        drifts, subjects, leaks, seconds = zip(*runs)
        rows[name] = {"drift": mean(drifts), "subject": mean(subjects), "leak": mean(leaks), "seconds": mean(seconds)}
        out[f"toy_drift_{name}_spread"] = (max(drifts) - min(drifts)) / mean(drifts)
    for name, row in rows.items():
        out[f"toy_drift_{name}"] = row["drift"]
        out[f"toy_subject_similarity_{name}"] = row["subject"]
        out[f"toy_leak_{name}"] = row["leak"]
        out[f"toy_train_s_{name}"] = row["seconds"]
    for name, row in rows.items():
        if name != "plain":
            out[f"toy_drift_{name}_vs_plain"] = row["drift"] / rows["plain"]["drift"]
            out[f"toy_subject_similarity_{name}_vs_plain"] = row["subject"] / rows["plain"]["subject"]
            out[f"toy_leak_{name}_vs_plain"] = row["leak"] / rows["plain"]["leak"] if rows["plain"]["leak"] else 0.0

    out.update(figures.token_figures(pipe, dino, subject.thing.cls, subject.token, args.seeds))
    out["toy_bench_s"] = time.perf_counter() - started
    out["load_average_1min"] = os.getloadavg()[0]
    for key, value in out.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
