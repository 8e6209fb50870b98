"""TrainSubjectLoRA as a user meets it, through the real server: a v-prediction model set up with ComfyUI's
ModelSamplingDiscrete trains as one, a split token's warning reaches the node, one step draws a chart, and a bad
LoRA name stops the prompt at validation, before an upstream Rare Token Picker samples, and a training's server
log holds no warning."""

import json

import numpy as np
import pytest
import websocket
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from safetensors import safe_open
from support.reliability_helpers import shaped_image
from support.training_graphs import BASE, QUICK, TRAIN


def _train(g, model, loader, lora_name, token="iklan", **overrides):
    values = {
        **BASE,
        **QUICK,
        "token": token,
        "lora_name": lora_name,
        "steps": 1,
        "mixed_precision": "auto",
        "gradient_checkpointing": "auto",
    }
    values.update(overrides)
    return g.node(TRAIN, model=model, clip=loader.out(1), vae=loader.out(2), images=shaped_image(g, batch=2), **values)


def _metadata(comfy, name):
    with safe_open(str(comfy.base_dir / "models" / "loras" / f"{name}.safetensors"), framework="pt") as f:
        return f.metadata()


def test_a_v_prediction_zsnr_model_from_model_sampling_discrete_trains_as_one(comfy):
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    vpred = g.node("ModelSamplingDiscrete", model=loader.out(0), sampling="v_prediction", zsnr=True)
    _train(g, vpred.out(0), loader, "ux_vpred")
    comfy.run(g.finalize(), timeout=300)
    settings = json.loads(_metadata(comfy, "ux_vpred")["image_alchemy.settings"])
    assert settings["prediction_type"] == "v_prediction" and settings["zero_terminal_snr"] is True
    assert _metadata(comfy, "ux_vpred")["ss_zero_terminal_snr"] == "True"


def test_split_token_warning_reaches_the_node_and_one_step_draws_a_chart(comfy):
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=120)
    try:
        g = GraphBuilder()
        loader = g.node("ImageAlchemyTest_TinySDXLLoader")
        train = _train(g, loader.out(0), loader, "ux_split_token", token="qzxjvkw")
        prompt_id = comfy.queue(g.finalize())
        warnings, texts = [], []
        while True:
            message = ws.recv()
            if isinstance(message, bytes):  # ComfyUI's progress text: 4-byte type, 4-byte id length, id, text
                texts.append(message[8 + int.from_bytes(message[4:8], "big") :].decode("utf-8", "replace"))
                continue
            event = json.loads(message)
            if event["type"] == "image_alchemy.train_progress" and event["data"]["phase"] == "warning":
                warnings.append(event["data"]["text"])
            if (
                event["type"] == "executing"
                and event["data"].get("node") is None
                and event["data"].get("prompt_id") == prompt_id
            ):
                break
    finally:
        ws.close()
    assert any("'qzxjvkw' is" in w and "Rare Token Picker" in w for w in warnings)
    assert any("'qzxjvkw' is" in t for t in texts)
    entry = comfy.wait(prompt_id)
    chart = np.asarray(comfy.output_images(entry, train.id)[0].convert("RGB"), np.int16)
    line = (chart[..., 2] > 150) & (chart[..., 0] < 80)  # the running-mean line's blue
    assert line.sum() > 200, "the one-step loss chart is empty"


def test_a_bad_lora_name_fails_at_validation_before_the_token_picker_samples(comfy):
    cache = comfy.base_dir / "user" / "image_alchemy" / "token_cache"
    before = sorted(cache.rglob("*")) if cache.exists() else []
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    picker = g.node(
        "ImageAlchemy_RareTokenPicker",
        model=loader.out(0),
        clip=loader.out(1),
        vae=loader.out(2),
        candidates="iklan ffin",
        vocabulary_scan=0,
        prompt_template="a photo of {token}",
        seeds_per_candidate=2,
        seed=0,
        width=64,
        height=64,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        use_cache=True,
    )
    _train(g, loader.out(0), loader, "../outside", token=picker.out(0))
    with pytest.raises(PromptFailed, match=r"prompt refused.*TrainSubjectLoRA: lora_name .* is not a safe file name"):
        comfy.queue(g.finalize())  # refused when queued: nothing ran
    assert (sorted(cache.rglob("*")) if cache.exists() else []) == before


def test_a_training_logs_no_warning_of_the_packs_making(comfy):
    """A normal training (two steps, a class image and previews on) leaves the server log without a warning:
    neither one of ours nor one that ComfyUI, torch or a library logs because of how the pack calls them (the
    model-config probe once made ComfyUI log "you accessed scaled_fp8 … doesn't exist" on every training)."""
    start = comfy.log_path.stat().st_size
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    _train(g, loader.out(0), loader, "ux_quiet_log", steps=2, preview_every=1, prior_images=1, prior_weight=1.0)
    comfy.run(g.finalize(), timeout=600)
    with open(comfy.log_path, "rb") as log:
        log.seek(start)
        lines = log.read().decode("utf-8", "replace").splitlines()
    warnings = [line for line in lines if "warn" in line.lower()]
    assert not warnings, "\n".join(warnings)
