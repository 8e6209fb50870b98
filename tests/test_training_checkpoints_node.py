"""Checkpoints and resume through the real server: save_every files carry their step and load in LoraLoader,
resume_from reaches the uninterrupted run's LoRA bytes on the CPU, and a cancel after a checkpoint keeps exactly
the checkpoints written (each with its resume state) and no partial file."""

import json
import re
import time

import numpy as np
import pytest
import websocket
from comfy_server import PromptFailed, trainer_processes
from image_alchemy.training.lora_file import read_metadata
from safetensors.torch import load_file
from support.training_graphs import leftovers, loras_dir, photo_train_graph, txt2img


def _tensors(path):
    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def _files(comfy, stem):
    return sorted(p.name for p in loras_dir(comfy).iterdir() if p.name.startswith(stem))


def test_checkpoints_carry_their_step_load_in_lora_loader_and_resume_to_the_same_bytes(comfy, subject_inputs):
    common = dict(steps=4, batch_size=2, resolution=64, rank=2, gradient_accumulation=2, flip=True)
    g, _ = photo_train_graph(subject_inputs, "ia_ckpt", save_every=2, **common)
    comfy.run(g.finalize(), timeout=600)
    assert _files(comfy, "ia_ckpt") == ["ia_ckpt-step2.safetensors", "ia_ckpt-step2.trainstate", "ia_ckpt.safetensors"]
    meta = read_metadata(loras_dir(comfy) / "ia_ckpt-step2.safetensors")
    assert meta["image_alchemy.step"] == "2" and len(json.loads(meta["image_alchemy.losses"])) == 2
    assert read_metadata(loras_dir(comfy) / "ia_ckpt.safetensors")["image_alchemy.step"] == "4"
    assert not leftovers(comfy)

    log_start = len(comfy.log_tail(10**9))
    g, save = txt2img("ia_ckpt-step2.safetensors")
    assert comfy.output_images(comfy.run(g.finalize()), save.id)
    assert "lora key not loaded" not in comfy.log_tail(10**9)[log_start:]

    g, _ = photo_train_graph(subject_inputs, "ia_ckpt_resumed", resume_from="ia_ckpt-step2", **common)
    log_start = len(comfy.log_tail(10**9))
    comfy.run(g.finalize(), timeout=600)
    resumed, whole = loras_dir(comfy) / "ia_ckpt_resumed.safetensors", loras_dir(comfy) / "ia_ckpt.safetensors"
    assert _tensors(resumed) == _tensors(whole)
    assert read_metadata(resumed)["image_alchemy.losses"] == read_metadata(whole)["image_alchemy.losses"]

    # Other settings than the checkpoint's: refused with the setting named, nothing trained.
    g, _ = photo_train_graph(subject_inputs, "ia_ckpt_other", resume_from="ia_ckpt-step2", **{**common, "rank": 4})
    with pytest.raises(PromptFailed, match=r"other settings \(rank\)"):
        comfy.run(g.finalize(), timeout=600)
    g, _ = photo_train_graph(subject_inputs, "ia_ckpt_other", resume_from="ia_nothing-step2", **common)
    with pytest.raises(PromptFailed, match="resume_from 'ia_nothing-step2' is not in models/loras"):
        comfy.run(g.finalize(), timeout=600)
    assert not _files(comfy, "ia_ckpt_other") and not leftovers(comfy)


def test_cancel_after_a_checkpoint_keeps_exactly_the_checkpoints_written(comfy, subject_inputs):
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=120)
    try:
        g, _ = photo_train_graph(
            subject_inputs, "ia_ckpt_cancel", steps=5000, save_every=2, batch_size=1, resolution=64, rank=2
        )
        prompt_id = comfy.queue(g.finalize())
        deadline, saved = time.monotonic() + 300, []
        while time.monotonic() < deadline and len(saved) < 2:
            message = ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "image_alchemy.train_progress" and event["data"].get("checkpoint"):
                    saved.append(event["data"]["checkpoint"])
        assert saved == ["ia_ckpt_cancel-step2.safetensors", "ia_ckpt_cancel-step4.safetensors"]
        comfy.interrupt()
        try:
            entry = comfy.wait(prompt_id, timeout=60)
        except PromptFailed as e:
            entry = e.details
        assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    finally:
        ws.close()
    assert not trainer_processes(comfy) and not leftovers(comfy)
    files = _files(comfy, "ia_ckpt_cancel")
    loras = [f for f in files if f.endswith(".safetensors")]
    steps = sorted(int(re.fullmatch(r"ia_ckpt_cancel-step(\d+)\.safetensors", f)[1]) for f in loras)
    assert steps == list(range(2, 2 * len(steps) + 1, 2)) and len(steps) >= 2  # every one asked for, no final
    assert files == sorted(loras + [f.replace(".safetensors", ".trainstate") for f in loras])  # each with its state
    assert not list(loras_dir(comfy).glob("*.partial"))
    meta = read_metadata(loras_dir(comfy) / loras[-1])
    assert meta["image_alchemy.step"] == str(steps[-1])
    assert np.isfinite(json.loads(meta["image_alchemy.losses"])).all()
