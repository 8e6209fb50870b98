"""SD1.5 through the family seam, end to end on the tiny SD1.5 built from ComfyUI's own classes (SD15 model
config, CLIP-L with the real SD1 tokenizer): `python -m training fit` on a single-file checkpoint and
TrainSubjectLoRA through the server. Each LoRA holds only the attention projections (counted), maps every key in
ComfyUI's LoRA loader, changes what the model draws and loads in diffusers with no unmatched key."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.training_graphs import leftovers, loras_dir, train_graph, txt2img
from tiny_models.subjects import write_subject_folder

ROOT = Path(__file__).resolve().parent.parent
# The tiny SD1.5 has 4 transformer blocks (down 0, middle, up 1 ×2), each with self- and cross-attention:
# 8 attention layers × to_q, to_k, to_v, to_out.0.
ATTENTION_MODULES = 32
PROJECTIONS = ("_to_q", "_to_k", "_to_v", "_to_out_0")


def _modules(path: Path) -> set[str]:
    return {k.split(".")[0] for k in load_file(str(path)) if k.endswith(".lora_down.weight")}


def _assert_attention_only(path: Path) -> None:
    modules = _modules(path)
    assert len(modules) == ATTENTION_MODULES
    assert all(m.startswith("lora_unet_") and m.endswith(PROJECTIONS) and "_attn" in m for m in modules)
    assert len(load_file(str(path))) == 3 * ATTENTION_MODULES  # down, up, alpha: nothing else in the file


@pytest.fixture(scope="module")
def fitted_sd15(sd15_checkpoint, sd15_pipeline_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit_sd15")
    images = write_subject_folder(folder / "photos", count=4, size=64)
    out = folder / "loras" / "iklan_sd15.safetensors"  # a folder that does not exist yet
    cmd = [
        sys.executable, "-m", "training", "fit", "--model", str(sd15_checkpoint), "--config", str(sd15_pipeline_dir),
        "--images", str(images), "--token", "iklan", "--class-word", "disc", "--out", str(out), "--steps", "12",
        "--resolution", "64", "--gradient-accumulation", "1", "--batch-size", "4", "--rank", "4",
        "--learning-rate", "1e-3", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["done"] and Path(events[-1]["output"]) == out
    return out


def test_fit_on_a_single_file_sd15_checkpoint_writes_an_sd15_attention_lora(fitted_sd15):
    _assert_attention_only(fitted_sd15)
    with safe_open(str(fitted_sd15), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["image_alchemy.model_family"] == "sd15"
    assert json.loads(meta["image_alchemy.settings"])["model_family"] == "sd15"  # told from the checkpoint's keys
    assert meta["ss_resolution"] == "(64, 64)"
    assert fitted_sd15.with_name("iklan_sd15-previews.png").exists()  # the previews sampled the SD1.5 UNet


def test_sd15_lora_loads_in_diffusers_with_no_unmatched_key(fitted_sd15, sd15_pipeline_dir, caplog):
    import diffusers
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(sd15_pipeline_dir), dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    diffusers.utils.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            pipe.load_lora_weights(str(fitted_sd15.parent), weight_name=fitted_sd15.name, adapter_name="subject")
    finally:
        diffusers.utils.logging.disable_propagation()
    # (The file is UNet-only: diffusers' note that the text encoder got no keys is expected.)
    assert "unexpected keys" not in caplog.text and "associated to UNet2DConditionModel" not in caplog.text
    layers = [m for m in pipe.unet.modules() if hasattr(m, "lora_B") and "subject" in m.lora_B]
    assert len(layers) == ATTENTION_MODULES
    assert all(m.lora_B["subject"].weight.abs().sum() > 0 for m in layers)  # the trained up weights arrived


def test_sd15_lora_maps_every_key_in_comfyuis_lora_loader(fitted_sd15, tiny_models, caplog):
    import comfy.lora
    import comfy.supported_models
    from tiny_models.factory import TINY_SD15_UNET_CONFIG, UNET_PREFIX

    model_config = comfy.supported_models.SD15(dict(TINY_SD15_UNET_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(load_file(str(tiny_models["sd15_unet"])), UNET_PREFIX, device=torch.device("cpu"))
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    lora = load_file(str(fitted_sd15))
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, key_map)
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == ATTENTION_MODULES


def test_sd15_trains_through_the_server_and_its_lora_changes_what_comfyui_draws(comfy):
    g, _train = train_graph("ia_sd15_subject", model="sd15", steps=12, resolution=64, learning_rate=1e-3)
    comfy.run(g.finalize(), timeout=600)
    path = loras_dir(comfy) / "ia_sd15_subject.safetensors"
    assert path.exists() and not leftovers(comfy)
    _assert_attention_only(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sd_v1" and meta["image_alchemy.model_family"] == "sd15"
    assert json.loads(meta["image_alchemy.settings"])["prediction_type"] == "epsilon"

    log_start = len(comfy.log_tail(10**9))
    g, save = txt2img(model="sd15")
    base = np.asarray(comfy.output_images(comfy.run(g.finalize()), save.id)[0], np.int16)
    g, save = txt2img("ia_sd15_subject.safetensors", model="sd15")
    with_lora = np.asarray(comfy.output_images(comfy.run(g.finalize()), save.id)[0], np.int16)
    assert "lora key not loaded" not in comfy.log_tail(10**9)[log_start:]
    assert np.abs(with_lora - base).mean() > 0.5
