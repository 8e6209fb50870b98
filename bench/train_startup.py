"""TrainSubjectLoRA start-up on a FULL-SIZE SDXL UNet (random fp16 weights, CPU), through a real ComfyUI server.

What it builds: the real SDXL UNet (ComfyUI's own SDXL config and key names, 2.6 G parameters, 5.1 GB fp16) as
a UNet file in models/diffusion_models, loaded with ComfyUI's UNETLoader with weight_dtype fp8_e4m3fn (ComfyUI
holds 2.6 GB instead of an fp32 copy, so that the whole run fits in ~17 GB; the trainer still reads the fp16
file and trains in fp32). The server runs with MALLOC_MMAP_THRESHOLD_=128K: glibc then returns the buffers
ComfyUI's loader frees (5 GB here) to the OS instead of keeping them in its heap. The VAE is the tests' TAESD-architecture one (real latent shapes) and
the text encoders are 3-layer CLIP-L/CLIP-G of the real widths (77×2048 embeddings, pooled 1280): full-size
encoders on CPU would dominate the time and are not what is measured.

Runs, one server:
  A. 4 photos at 1024², 1 step: timed from the node's execute (websocket) to the trainer's "training loop
     starts" log line; the trainer's peak RSS there above its RSS when it starts reading the UNet; the server's
     peak above its RSS when the node starts (the MODEL already loaded). Interrupted right there (a full-size
     step at 1024² on CPU takes minutes and ~15 GB of activations). The trainer starts early and overlaps the
     node's encoding (training/staged.py); the breakdown_* lines are the durations the node and the trainer log
     (the photos' VAE encoding, the trainer's imports, its UNet read, and how long the trainer, ready, waited
     for the node's job), which overlap: they do not add up to the total.
  B. the same at 64² (the handover now cached), trained to the end: its LoRA makes C a cache hit.
  C. B again (the LoRA name spelled with its extension, so ComfyUI re-runs the node): the node's execute time
     and the bytes it wrote.
Goals (issue 14): trainer peak ≤ 1.3× the UNet's bytes (in the dtype it trains in: fp32 on CPU), fingerprint
≤ 1 s, cached run 0 bytes in ≤ 2 s, time to loop start ≤ 20 s. Needs ~16 GB of free RAM and ~11 GB of disk;
`make bench` skips it (`make bench-startup` runs it).
Run: .venv/bin/python bench/train_startup.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = ROOT / ".cache" / "comfyui"
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
sys.path.append(str(COMFY_DIR))

from pack_import import TINY_PACK, TINY_PACK_NAME, import_pack  # noqa: E402

import_pack()

import websocket  # noqa: E402
from comfy_execution.graph_utils import GraphBuilder  # noqa: E402
from comfy_server import ComfyServer, trainer_processes  # noqa: E402
from image_alchemy.training.weights import fingerprint, read_tensors, write_tensors  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_models.subjects import synthetic_subject  # noqa: E402

# ComfyUI's own SDXL UNet entry (comfy/model_detection.py, unet_config_from_diffusers_unet).
SDXL_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10,
    "use_linear_in_transformer": True,
    "context_dim": 2048,
    "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
UNET_FILE = "sdxl_random_fp16.safetensors"
NEEDED_GB = 16.0


def proc(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of a process in GiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 2**20
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def write_full_unet(path: Path) -> tuple[float, float]:
    """The full SDXL UNet with random fp16 weights; returns (fingerprint seconds, bytes)."""
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    meta = UNetModel(
        **SDXL_UNET, dtype=torch.float16, device="meta", operations=comfy.ops.disable_weight_init
    ).state_dict()
    detected = comfy.model_detection.model_config_from_unet(meta, "")
    assert type(detected).__name__ == "SDXL", type(detected)
    if path.exists():  # --keep: written by an earlier run
        tensors = read_tensors(path, "", torch.float16)
    else:
        gen = torch.Generator().manual_seed(0)
        tensors = {k: torch.randn(v.shape, generator=gen, dtype=torch.float16).mul_(0.02) for k, v in meta.items()}
    assert set(tensors) == set(meta)
    started = time.perf_counter()
    fingerprint(tensors)
    seconds = time.perf_counter() - started
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if not path.exists():
        write_tensors(path, tensors)
    del tensors
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give the 5 GB back before the server and trainer start
    return seconds, size


def write_narrow_clip(path: Path) -> None:
    """SDXL's two text encoders at their real widths (768 / 1280, projection 1280) with 3 layers each (SDXL reads
    the penultimate layer)."""
    import comfy.ops
    from comfy.clip_model import CLIPTextModel
    from safetensors.torch import save_file
    from tiny_models.factory import _TEXT_BASE, seeded_fill

    configs = {
        "clip_l": {
            **_TEXT_BASE,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 3,
            "projection_dim": 768,
        },
        "clip_g": {
            **_TEXT_BASE,
            "hidden_act": "gelu",
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 20,
            "num_hidden_layers": 3,
            "projection_dim": 1280,
        },
    }
    tensors = {}
    for seed, (name, config) in enumerate(configs.items()):
        model = CLIPTextModel(config, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
        seeded_fill(model, 10 + seed)
        tensors.update({f"{name}.transformer.{k}": v.contiguous() for k, v in model.state_dict().items()})
    save_file(
        tensors,
        str(path),
        metadata={
            "format": "pt",
            "tiny_sdxl.clip_l_config": json.dumps(configs["clip_l"]),
            "tiny_sdxl.clip_g_config": json.dumps(configs["clip_g"]),
        },
    )


def graph(names: list[str], resolution: int, lora_name: str):
    g = GraphBuilder()
    unet = g.node("UNETLoader", unet_name=UNET_FILE, weight_dtype="fp8_e4m3fn")
    tiny = g.node("ImageAlchemyTest_TinySDXLLoader")
    batch = g.node("LoadImage", image=names[0]).out(0)
    for name in names[1:]:
        batch = g.node("ImageBatch", image1=batch, image2=g.node("LoadImage", image=name).out(0)).out(0)
    train = g.node(
        "ImageAlchemy_TrainSubjectLoRA",
        model=unet.out(0),
        clip=tiny.out(1),
        vae=tiny.out(2),
        images=batch,
        token="iklan",
        class_word="disc",
        lora_name=lora_name,
        steps=1,
        learning_rate=1e-4,
        rank=8,
        alpha=0.0,
        batch_size=1,
        resolution=resolution,
        seed=0,
        mixed_precision="no",
        gradient_checkpointing=False,
        flip=False,
        noise_offset=0.0,
    )
    return g.finalize(), train.id


def files(base: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in base.rglob("*"):
        rel = path.relative_to(base).as_posix()
        if path.is_file() and rel != "server.log" and not rel.startswith("user/"):
            out[rel] = (path.stat().st_size, path.stat().st_mtime_ns)
    return out


def run(server: ComfyServer, prompt, train_id: str, stop_at_loop: bool) -> dict:
    """Queues ``prompt`` and measures the train node; interrupts at the loop start when ``stop_at_loop``."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}", timeout=600)
    ws.settimeout(0.05)
    found: dict = {}
    work = server.base_dir / "temp" / "image_alchemy_train"
    try:
        prompt_id = server.queue(prompt)
        while True:
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                message = None
            now = time.perf_counter()
            if isinstance(message, str):
                event = json.loads(message)
                node = event.get("data", {}).get("node")
                if event["type"] == "executing" and node == train_id and "t0" not in found:
                    found["t0"] = now
                    found["server_base"] = proc(server.process.pid)["VmRSS"]
                    reset_peak(server.process.pid)
                elif (
                    "t0" in found
                    and "t_end" not in found
                    and (
                        event["type"] in ("execution_success", "execution_interrupted", "execution_error")
                        or (event["type"] == "executing" and node != train_id)
                    )
                ):
                    found["t_end"] = now
                if (
                    event["type"] in ("execution_success", "execution_interrupted", "execution_error")
                    and event.get("data", {}).get("prompt_id") == prompt_id
                ):
                    if event["type"] == "execution_error":
                        raise RuntimeError(f"the prompt failed:\n{server.log_tail()}")
                    break
            logs = sorted(work.glob("job-*/trainer.log")) if "t0" in found and "t_loop" not in found else []
            if logs and "pid" not in found and now - found.get("t_ps", 0.0) > 0.5:
                # `ps` once the trainer exists, at most twice a second: every 50 ms would slow 2 cores down
                found["t_ps"] = now
                pids = trainer_processes(server)
                if pids:
                    found["pid"] = pids[0][0]
            if logs and "pid" in found:
                text = logs[0].read_text(errors="replace")
                if "reading the base UNet" in text and "trainer_base" not in found:
                    found["trainer_base"] = proc(found["pid"])["VmRSS"]
                if "training loop starts" in text:
                    found["t_loop"] = now
                    found["trainer_peak"] = proc(found["pid"])["VmHWM"]
                    found["server_peak"] = proc(server.process.pid)["VmHWM"]
                    found["trainer_log"] = text
                    found["load"] = os.getloadavg()
                    if stop_at_loop:
                        server.interrupt()
    finally:
        ws.close()
    found.setdefault("server_peak", proc(server.process.pid)["VmHWM"])
    server.wait(prompt_id, timeout=900) if not stop_at_loop else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp folder, removed)")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="with --keep after a full run: measure only the cached run (C), in a fresh server",
    )
    args = parser.parse_args()
    if available_gb() < NEEDED_GB:
        print(f"train_startup: skipped: {available_gb():.1f} GiB of RAM available, needs {NEEDED_GB}")
        return
    base = Path(args.keep or tempfile.mkdtemp(prefix="ia_startup_"))
    from tiny_models import factory

    factory.use_comfyui(COMFY_DIR)
    tiny = factory.write_tiny_sdxl(base / "tiny_sdxl")
    write_narrow_clip(tiny["clip"])
    (base / "models" / "diffusion_models").mkdir(parents=True, exist_ok=True)
    if not (base / "models" / "tiny_sdxl").exists():
        (base / "models" / "tiny_sdxl").symlink_to(tiny["unet"].parent, target_is_directory=True)
    for old in [] if args.cached_only else (base / "models").rglob("startup_*.safetensors"):
        old.unlink()  # --keep: LoRAs of an earlier run would turn run B into a cache hit
    fingerprint_s, unet_bytes = write_full_unet(base / "models" / "diffusion_models" / UNET_FILE)
    server = ComfyServer(
        COMFY_DIR,
        base,
        {"comfyui-image-alchemy": ROOT, TINY_PACK_NAME: TINY_PACK},
        env={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
    )
    names = []
    for i, img in enumerate(synthetic_subject(4, 1024)[0]):
        names.append(f"startup_{i}.png")
        (base / "input").mkdir(exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(base / "input" / names[-1])
    print(f"bench_process_rss_gb: {proc(os.getpid())['VmRSS']:.2f}", flush=True)
    try:
        server.start()
        if args.cached_only:
            run(server, *graph(names, 64, "startup_b"), stop_at_loop=False)  # loads the models: a cache hit too
            before = files(base)
            c = run(server, *graph(names, 64, "startup_b.safetensors"), stop_at_loop=False)
            changed = {k: v[0] for k, v in files(base).items() if before.get(k) != v}
            preview = sum(n for k, n in changed.items() if k.startswith("temp/") and k.endswith(".png"))
            print(f"cached_run_s: {c['t_end'] - c['t0']:.2f}")
            print(f"cached_run_bytes_written: {sum(changed.values()) - preview}")
            print(f"cached_run_preview_png_bytes: {preview}")
            return
        log_start = len(server.log_tail(10**9))  # --keep: the server log holds earlier runs' lines too
        a = run(server, *graph(names, 1024, "startup_a"), stop_at_loop=True)
        b = run(server, *graph(names, 64, "startup_b"), stop_at_loop=False)
        # The same LoRA under another spelling of its name: ComfyUI re-runs only the train node (its loaders
        # stay cached, no 5 GB reload), and the node sees the same inputs as in B.
        before = files(base)
        c = run(server, *graph(names, 64, "startup_b.safetensors"), stop_at_loop=False)
        changed = {k: v[0] for k, v in files(base).items() if before.get(k) != v}
        preview = {k: n for k, n in changed.items() if k.startswith("temp/") and k.endswith(".png")}
        log = server.log_tail(10**9)[log_start:]
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    trained_gb = unet_bytes * 2 / 2**30  # the trainer holds it in fp32 on the CPU (mixed_precision "no")
    peak = a["trainer_peak"] - a["trainer_base"]
    print(
        "setup: full-size SDXL UNet (random fp16 file) via UNETLoader (held as fp8 by ComfyUI), TAESD-type VAE, "
        "3-layer real-width CLIP-L/G, CPU, trainer fp32, server MALLOC_MMAP_THRESHOLD_=128K"
    )
    print(f"unet_handover: {'checkpoint file' if 'reads the UNet from' in log else 'export to the pack cache'}")
    print(f"time_to_loop_start_s: {a['t_loop'] - a['t0']:.2f}")
    print(f"load_average_at_loop_start: {a['load'][0]:.2f}")
    for name, pattern, text in (
        ("node_encode_s", r"encoded \d+ photos? at \d+² in ([\d.]+) s", log),
        ("trainer_imports_s", r"trainer libraries imported in ([\d.]+) s", a["trainer_log"]),
        ("trainer_unet_read_s", r"base UNet read in ([\d.]+) s", a["trainer_log"]),
        ("trainer_waited_for_job_s", r"job ready after a wait of ([\d.]+) s", a["trainer_log"]),
    ):
        found = re.findall(pattern, text)  # run A's: the first in the server log, the only one in its trainer's
        print(f"breakdown_{name}: {found[0] if found else 'n/a'}")
    print(f"time_to_loop_start_handover_cached_s: {b['t_loop'] - b['t0']:.2f}")
    print(f"fingerprint_s: {fingerprint_s:.3f}")
    print(f"unet_file_gb: {unet_bytes / 2**30:.2f}")
    print(f"unet_gb: {trained_gb:.2f}")
    print(f"trainer_peak_rss_gb: {peak:.2f}")
    print(f"trainer_peak_over_unet: {peak / trained_gb:.3f}")
    print(f"server_extra_rss_gb: {a['server_peak'] - a['server_base']:.2f}")
    print(f"cached_run_s: {c['t_end'] - c['t0']:.2f}")
    print(f"cached_run_bytes_written: {sum(changed.values()) - sum(preview.values())}")
    print(f"cached_run_preview_png_bytes: {sum(preview.values())}")


if __name__ == "__main__":
    main()
