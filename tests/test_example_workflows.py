"""The shipped example workflows: valid UI format, listed by the server as templates, and runnable through the API
(converted from UI format, with the tiny test models swapped in for the real model files)."""
from pathlib import Path

import pytest
import requests

import tiny_detectors
import workflows
from lora_helpers import write_kohya_lora
from PIL import Image
from tiny.subjects import subject_set

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOW_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
DINO, SAM, LORA = "examples-dino", "examples_sam.pth", "examples_subject.safetensors"


@pytest.fixture(scope="module")
def example_models(comfy, tiny_models):
    models = comfy.base_dir / "models"
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / DINO)
    tiny_detectors.write_sam(models / "sams" / SAM)
    write_kohya_lora(models / "loras" / LORA, tiny_models["unet"])
    for i, rgb in enumerate(subject_set(count=5, size=64)[0]):  # the names the learn-subject workflow loads
        Image.fromarray(rgb).save(comfy.base_dir / "input" / f"subject_{i}.png")


def test_every_workflow_has_a_preview_and_notes():
    assert WORKFLOW_FILES, "no example workflows shipped"
    for path in WORKFLOW_FILES:
        assert path.with_suffix(".jpg").exists(), f"{path.name} has no preview image"
        workflow = workflows.load(path)
        assert any(node["type"] in workflows.UI_ONLY_TYPES for node in workflow["nodes"]), f"{path.name}: no Note"


def test_server_lists_the_workflows_as_templates(comfy):
    listed = requests.get(comfy.url + "/workflow_templates", timeout=10).json()
    ours = listed.get("comfyui-image-alchemy", [])
    assert sorted(ours) == sorted(p.stem for p in WORKFLOW_FILES)
    for name in ours:
        r = requests.get(f"{comfy.url}/api/workflow_templates/comfyui-image-alchemy/{name}.json", timeout=10)
        assert r.ok and r.json()["nodes"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflow_runs_through_the_api(comfy, example_models, path):
    prompt = workflows.ui_to_api(workflows.load(path), comfy.object_info())
    workflows.adapt_for_tiny_models(prompt, dino=DINO, sam=SAM, lora=LORA)
    entry = comfy.run(prompt, timeout=600)
    shown = [node_id for node_id, node in prompt.items() if node["class_type"] in ("SaveImage", "PreviewImage")]
    assert shown
    for node_id in shown:
        assert comfy.output_images(entry, node_id), f"{path.stem}: node {node_id} showed no image"
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":  # the final images keep the scene's size
            assert comfy.output_images(entry, node_id)[0].size == (64, 64)
        if node["class_type"] == "ImageAlchemy_TrainSubjectLoRA":
            lora = node["inputs"]["lora_name"] + ".safetensors"
            assert (comfy.base_dir / "models" / "loras" / lora).exists()
