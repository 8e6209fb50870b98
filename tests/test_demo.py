"""`make demo`'s scene graph on the toy world (scripts/demo.py, a real ComfyUI server): the trained toy detectors
find the class object, the insert changes nothing outside its repaint region, and the measuring net reads the
repainted region with the subject's colours (toy_world.figures.demo_scene_figures). The subject LoRA is the toy
world's committed one (the demo trains its own with the same settings)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("image_alchemy_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.use_toy_world()
    return module


@pytest.fixture(scope="module")
def server(demo, comfy_dir, tmp_path_factory):
    from comfy_server import ComfyServer
    from pack_import import TINY_PACK, TINY_PACK_NAME

    base = tmp_path_factory.mktemp("demo_base")
    (base / "input").mkdir()
    names = demo.prepare_base(base, None, toy=True)
    subject = demo.toy_world_module().SUBJECTS[0]
    lora = f"demo_{demo.TOKEN}_{demo.CLASS_WORD}.safetensors"
    shutil.copyfile(demo.TOY_MODELS / f"lora_{subject.name}.safetensors", base / "models" / "loras" / lora)
    comfy = ComfyServer(comfy_dir, base, {"comfyui-image-alchemy": ROOT, TINY_PACK_NAME: TINY_PACK}).start()
    yield comfy, base, names, lora
    comfy.stop()


def test_the_demo_scenes_mask_the_class_object_and_repaint_only_there(demo, server):
    comfy, base, names, lora = server
    measured = {}
    for seed, (name, text) in enumerate(demo.SCENES.items(), start=1):
        prompt = demo.scene_prompt(comfy, names, lora, text, seed, tiny=True, toy=True)
        saves = demo.add_mask_outputs(prompt)
        entry = comfy.run(prompt, timeout=900)
        measured[name] = demo.measure_scene(base, prompt, entry, saves)[0]
    for name, figures in measured.items():
        assert figures["mask_iou_with_drawn_object"] >= 0.5, (name, figures)
        assert figures["pixels_changed_outside_repaint"] == 0, (name, figures)
        assert figures["repaint_share_of_picture"] < 0.9, (name, figures)  # not a whole-picture img2img
    assert any(f["read_as_subject"] for f in measured.values()), measured
