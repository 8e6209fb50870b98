"""Load: 20 prompts queued back to back on the tiny models all finish, in the order they were queued, and the
server's memory comes back near where it started."""

import logging
import time

import psutil
import requests
from comfy_execution.graph_utils import GraphBuilder
from support.graphs import tiny_scene

log = logging.getLogger(__name__)
PROMPTS = 20
# Allowed RSS growth over the 20 prompts after a warm-up prompt (allocator slack, cached graph outputs).
RSS_SLACK_MB = 150


def txt2img(seed: int):
    g = GraphBuilder()
    image = tiny_scene(g, f"a photo of a dog on a beach, take {seed}", seed=seed)[1].out(0)
    mask = g.node("SolidMask", value=1.0, width=64, height=64).out(0)
    blurred = g.node(
        "ImageAlchemy_DecayBlur",
        image=image,
        mask=mask,
        mode="gaussian",
        kernel_size=15,
        sigma=5.0,
        decay_lambda=5.0,
        distance_unit="kernel radius",
        decay="sigma",
    )
    g.node("SaveImage", images=blurred.out(0), filename_prefix=f"load_{seed:02d}")
    return g.finalize()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def start_time(entry: dict) -> int:
    return next(m[1]["timestamp"] for m in entry["status"]["messages"] if m[0] == "execution_start")


def test_twenty_prompts_back_to_back_finish_in_order_and_memory_returns(comfy):
    comfy.run(txt2img(1000))  # warm-up: imports, first model load
    requests.post(comfy.url + "/free", json={"free_memory": True}, timeout=10)
    time.sleep(1.0)
    before = rss_mb(comfy.process.pid)

    ids = [comfy.queue(txt2img(seed)) for seed in range(PROMPTS)]  # all queued before the first one finishes
    entries = [comfy.wait(pid, timeout=300) for pid in ids]
    peak = rss_mb(comfy.process.pid)
    requests.post(comfy.url + "/free", json={"free_memory": True}, timeout=10)
    time.sleep(1.5)
    after = rss_mb(comfy.process.pid)
    log.warning(
        "load: %d prompts, server RSS before %.0f MB, right after %.0f MB, after /free %.0f MB",
        PROMPTS,
        before,
        peak,
        after,
    )

    assert all(e["status"]["status_str"] == "success" for e in entries)
    starts = [start_time(e) for e in entries]
    assert starts == sorted(starts), "prompts ran out of queue order"
    for seed, entry in enumerate(entries):
        files = [
            img["filename"]
            for out in entry["outputs"].values()
            for img in out.get("images", [])
            if img.get("type") == "output"
        ]
        assert len(files) == 1 and files[0].startswith(f"load_{seed:02d}")
    assert after - before < RSS_SLACK_MB, (before, peak, after)
    assert comfy.alive()
