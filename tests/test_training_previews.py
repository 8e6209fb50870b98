"""Sample previews through the real server: they arrive during training as ComfyUI progress previews (what
KSampler sends) with our step events, the previews output has one row per preview and one column per prompt,
and drawing them leaves the LoRA's bytes as they are without previews."""

import io
import json

import numpy as np
import websocket
from PIL import Image
from safetensors.torch import load_file
from support.training_graphs import loras_dir, photo_train_graph

PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4  # ComfyUI's binary websocket event types


def test_previews_arrive_during_training_and_the_grid_has_a_row_per_preview(comfy, subject_inputs):
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=120)
    try:
        g, train = photo_train_graph(
            subject_inputs,
            "ia_previews",
            steps=5,
            batch_size=2,
            resolution=64,
            rank=2,
            preview_every=2,
            preview_steps=2,
            preview_prompt="a drawing of {token} {class_word}",
        )
        save = g.node("SaveImage", images=train.out(2), filename_prefix="ia_preview_grid")
        prompt_id = comfy.queue(g.finalize())
        timeline = []  # ("step", n, preview?) and ("image", size) in arrival order
        while True:
            message = ws.recv()
            if isinstance(message, bytes):
                kind = int.from_bytes(message[:4], "big")
                if kind == PREVIEW_IMAGE:
                    timeline.append(("image", Image.open(io.BytesIO(message[8:])).size))
                elif kind == PREVIEW_IMAGE_WITH_METADATA:
                    length = int.from_bytes(message[4:8], "big")
                    timeline.append(("image", Image.open(io.BytesIO(message[8 + length :])).size))
                continue
            event = json.loads(message)
            if event["type"] == "image_alchemy.train_progress" and event["data"].get("phase") == "step":
                timeline.append(("step", event["data"]["step"], event["data"]["preview"]))
            if (
                event["type"] == "executing"
                and event["data"].get("node") is None
                and event["data"].get("prompt_id") == prompt_id
            ):
                break
    finally:
        ws.close()
    steps = [t for t in timeline if t[0] == "step"]
    assert steps == [
        ("step", 1, False),
        ("step", 2, True),
        ("step", 3, False),
        ("step", 4, True),
        ("step", 5, True),
    ]  # every 2 steps and at the last
    images = [t for t in timeline if t[0] == "image"]
    # 2 prompts' 8×8 latents side by side (ComfyUI scales the preview up to its preview size, keeping the aspect).
    assert len(images) == 3 and all(w == 2 * h for _, (w, h) in images)
    # Each live view arrives before the step event it belongs to is done, i.e. during training.
    first_image = timeline.index(images[0])
    assert first_image < timeline.index(("step", 3, False))
    entry = comfy.wait(prompt_id)
    grid = np.asarray(comfy.output_images(entry, save.id)[0])
    assert grid.shape == (3 * 64, 2 * 64, 3)  # rows = preview steps (2, 4, 5), columns = the two prompts
    assert grid.std() > 1.0  # drawn, not a blank

    g, _ = photo_train_graph(
        subject_inputs, "ia_previews_off", steps=5, batch_size=2, resolution=64, rank=2, preview_every=0
    )
    comfy.run(g.finalize(), timeout=600)
    with_previews = load_file(str(loras_dir(comfy) / "ia_previews.safetensors"))
    without = load_file(str(loras_dir(comfy) / "ia_previews_off.safetensors"))
    assert with_previews.keys() == without.keys()
    assert all(np.array_equal(with_previews[k].numpy(), without[k].numpy()) for k in without)
