"""TrainSubjectLoRA through the real ComfyUI server: trains on the tiny model, the LoRA loads in LoraLoader,
same inputs are not trained twice, cancel leaves nothing behind."""

import json
import time

import numpy as np
import pytest
import requests
import websocket
from comfy_server import PromptFailed, trainer_processes
from safetensors import safe_open
from support.training_graphs import leftovers, loras_dir, photo_train_graph, txt2img


def test_trains_subject_lora_loads_in_lora_loader_and_is_not_trained_twice(comfy, subject_inputs):
    g, train = photo_train_graph(subject_inputs, "ia_test_subject", steps=40, with_mask=True)
    entry = comfy.run(g.finalize(), timeout=600)
    path = loras_dir(comfy) / "ia_test_subject.safetensors"
    assert path.exists() and not leftovers(comfy) and not trainer_processes(comfy)
    with safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    losses = json.loads(meta["image_alchemy.losses"])
    assert len(losses) == 40 and meta["image_alchemy.token"] == "iklan" and meta["ss_network_dim"] == "4"
    assert np.mean(losses[-10:]) < np.mean(losses[:10])  # intentional overfit: the loss falls
    assert sum(k.endswith(".lora_down.weight") for k in keys) == 32
    assert comfy.output_images(entry, train.id)  # the loss curve preview

    # LoraLoader maps every key (ComfyUI logs "lora key not loaded" otherwise) and the picture changes.
    log_start = len(comfy.log_tail(10**9))
    g, save = txt2img()
    base = np.asarray(comfy.output_images(comfy.run(g.finalize()), save.id)[0], np.int16)
    g, save = txt2img("ia_test_subject.safetensors")
    with_lora = np.asarray(comfy.output_images(comfy.run(g.finalize()), save.id)[0], np.int16)
    assert "lora key not loaded" not in comfy.log_tail(10**9)[log_start:]
    assert np.abs(with_lora - base).mean() > 0.5

    # Same inputs again, ComfyUI's own cache cleared: the existing LoRA is returned without training.
    mtime = path.stat().st_mtime_ns
    requests.post(comfy.url + "/free", json={"free_memory": True}, timeout=10)
    time.sleep(1.5)
    g, train = photo_train_graph(subject_inputs, "ia_test_subject", steps=40, with_mask=True)
    log_start = len(comfy.log_tail(10**9))
    comfy.run(g.finalize(), timeout=300)
    assert path.stat().st_mtime_ns == mtime
    assert "already trained from these inputs" in comfy.log_tail(10**9)[log_start:]


def test_cancel_stops_trainer_leaves_no_file_and_server_keeps_serving(comfy, subject_inputs):
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=120)
    try:
        g, _ = photo_train_graph(subject_inputs, "ia_cancel_me", steps=5000)
        prompt_id = comfy.queue(g.finalize())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            message = ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "image_alchemy.train_progress" and event["data"].get("phase") == "step":
                    break
        else:
            pytest.fail("no training progress event arrived")
        assert trainer_processes(comfy)
        cancelled = time.monotonic()
        comfy.interrupt()
        try:
            entry = comfy.wait(prompt_id, timeout=60)
        except PromptFailed as e:
            entry = e.details
        latency = time.monotonic() - cancelled
        assert latency < 4.0, latency  # terminate → kill after 2 s, plus polling and the history poll
        assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    finally:
        ws.close()
    assert not trainer_processes(comfy)
    assert not (loras_dir(comfy) / "ia_cancel_me.safetensors").exists()
    assert not leftovers(comfy)
    assert comfy.alive()
    g, save = txt2img(seed=5)
    assert comfy.output_images(comfy.run(g.finalize()), save.id)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lora_name": "../outside"}, "not a safe file name"),
        ({"token": "two words"}, "token must be one word"),
        ({"mixed_precision": "bf16"}, "needs a GPU"),
    ],
)
def test_bad_inputs_fail_with_an_actionable_error_and_train_nothing(comfy, subject_inputs, settings, message):
    g, _ = photo_train_graph(subject_inputs, settings.pop("lora_name", "ia_never"), steps=2, **settings)
    with pytest.raises(PromptFailed, match=message):
        comfy.run(g.finalize())
    assert not trainer_processes(comfy) and not leftovers(comfy)
    assert (
        not list(loras_dir(comfy).glob("ia_never*"))
        and not (comfy.base_dir / "models" / "outside.safetensors").exists()
    )
