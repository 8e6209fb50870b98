"""The toy world's committed models (toy_world/models) show the method working, not only running.

The stable parts of bench/toy_world.py, with the bench's seeds (one torch thread: the same numbers on the same
machine): stage 1 draws the class asked for (bench: 0.94, chance 0.25), the subject LoRA raises subject
similarity from nothing (bench: 0.0001 → 0.355 with the joint identity embedding, 0.26 → 0.60 with the heads
concatenated), the insertion puts the subject inside the mask (0.265 vs 0.0001 for the scene) and leaves every
pixel outside the repaint region unchanged, the trained detectors' mask covers the object and does the same job in
the insert's loop, and the files are the ones the manifest lists. Margins are about half the measured
differences. The regenerating command is `make toy-world`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "toy_world" / "models"
# The detectors at the demo's threshold on 32 held-out pictures (measured: box recall 0.875, mask IoU 0.89; the
# bench's 64: 0.875, 0.88), floors 4 pictures' worth of recall under them.
RECALL_FLOOR, MASK_IOU_FLOOR = 0.75, 0.75


@pytest.fixture(scope="module")
def toy(comfy_dir):
    if "toy_world" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "toy_world", ROOT / "toy_world" / "__init__.py", submodule_search_locations=[str(ROOT / "toy_world")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["toy_world"] = module
        spec.loader.exec_module(module)
    from toy_world import figures, measure, models, world

    models.use_comfyui(comfy_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = models.pipeline(FOLDER, comfy_dir)
    yield {
        "figures": figures,
        "measure": measure,
        "world": world,
        "pipe": pipe,
        "net": measure.MeasuringNet(FOLDER / "measure_vit"),
    }
    torch.set_num_threads(threads)


def test_files_match_the_manifest():
    manifest = json.loads((FOLDER / "manifest.json").read_text())
    assert "make toy-world" in manifest["command"]
    on_disk = sorted(str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((FOLDER / name).read_bytes()).hexdigest() == digest, f"{name} differs from the manifest"
    # 20 MB: CLIP's 49 408-token embedding tables (6.5 MB), TAESD (4.9 MB), the 64-channel UNet (8.8 MB) in fp16.
    assert sum((FOLDER / n).stat().st_size for n in on_disk) < 24 * 2**20, "the toy world must stay small"


def test_stage1_draws_the_class_asked_for(toy):
    accuracy, _ = toy["figures"].class_accuracy(toy["pipe"], toy["net"], seeds=8)
    assert accuracy >= 0.6, f"class accuracy {accuracy:.2f} (chance 0.25)"


def test_subject_lora_raises_subject_similarity(toy):
    figures, measure, world = toy["figures"], toy["measure"], toy["world"]
    subject = world.SUBJECTS[0]
    refs = figures.views(subject)
    lora = measure.lora_pipe(toy["pipe"], FOLDER, measure.lora_path(FOLDER, subject))
    base_images = figures.subject_images(toy["pipe"], subject, 8)
    lora_images = figures.subject_images(lora, subject, 8)
    base, tuned = (toy["net"].similarity(i, refs) for i in (base_images, lora_images))
    assert tuned >= 2 * base + 0.15, f"subject similarity {tuned:.3f} with the LoRA vs {base:.3f} without"
    concatenated = [toy["net"].similarity(i, refs, joint=False) for i in (base_images, lora_images)]
    assert concatenated[1] >= 1.5 * concatenated[0], f"concatenated-heads similarity {concatenated}"


def test_insert_puts_the_subject_in_the_mask_and_keeps_the_rest(toy):
    figures, measure, world = toy["figures"], toy["measure"], toy["world"]
    subject = world.SUBJECTS[0]
    lora = measure.lora_pipe(toy["pipe"], FOLDER, measure.lora_path(FOLDER, subject))
    got = figures.insert_figures(toy["pipe"], lora, toy["net"], subject, scenes=8)
    assert got["toy_insert_changed_outside_repaint"] == 0
    assert got["toy_insert_mean_change_inside_repaint"] > 30  # it did repaint (bench: 96 of 255)
    assert got["toy_insert_subject_similarity_in_mask"] > got["toy_insert_subject_similarity_scene_in_mask"] + 0.12


def test_the_trained_detectors_find_the_object(toy):
    """GroundedSAMMask's computation with the toy world's GroundingDINO and SAM, loaded by the pack's own loaders,
    on held-out world pictures prompted with the object's class word, at the demo's box threshold (0.2): the box is
    on the object and SAM's mask covers it. (Not asserted, as not reached: the GroundingDINO does not tell the
    classes apart, and at the workflow's 0.3 it keeps a box for about half the pictures.)"""
    from toy_world import detectors

    detector, sam = detectors.load(FOLDER)
    threshold = detectors.TOY_THRESHOLD
    got = detectors.detection_figures(detector, sam, count=32, threshold=threshold)
    suffix = f"_at_{threshold:g}".replace(".", "_")
    assert got[f"toy_detect_box_recall_at_0_5{suffix}"] >= RECALL_FLOOR, got
    assert got[f"toy_detect_mask_iou{suffix}"] >= MASK_IOU_FLOOR, got


def test_insert_with_the_detectors_mask_in_the_loop(toy):
    """The insert figures with GroundedSAMMask's mask (the demo's threshold) instead of the drawn object's (bench:
    a mask in 8 of 8 scenes, similarity in the mask 0.276 vs 0.0001 before, 0 px changed outside)."""
    from toy_world import detectors

    figures, measure, world = toy["figures"], toy["measure"], toy["world"]
    subject = world.SUBJECTS[0]
    lora = measure.lora_pipe(toy["pipe"], FOLDER, measure.lora_path(FOLDER, subject))
    detector, sam = detectors.load(FOLDER)
    find = figures.detected_mask(
        detector, sam, box_threshold=detectors.TOY_THRESHOLD, text_threshold=detectors.TOY_THRESHOLD
    )
    got = figures.insert_figures(toy["pipe"], lora, toy["net"], subject, scenes=8, find=find, name="detected")
    assert got["toy_detected_scenes_with_a_mask"] >= 0.75, got
    assert got["toy_detected_changed_outside_repaint"] == 0, got
    assert got["toy_detected_subject_similarity_in_mask"] > got["toy_detected_subject_similarity_scene_in_mask"] + 0.12
