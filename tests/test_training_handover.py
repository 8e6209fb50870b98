"""How the base UNet reaches the trainer, through the real server: the "already trained" check comes before any
file is written; an export goes to the pack's cache under models/ (ComfyUI empties temp/ at every start and
exit) and is reused; a MODEL whose loader recorded its safetensors file is trained from that file, unless the
file no longer holds the loaded weights."""

import time

import requests
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import trainer_processes
from safetensors.torch import load_file, save_file
from support.reliability_helpers import shaped_image
from support.training_graphs import TRAIN, leftovers, train_graph


def cache(comfy):
    return comfy.base_dir / "models" / "image_alchemy" / "unet_cache"


def files(comfy) -> dict[str, tuple[int, int]]:
    """Every file the server could write for a prompt (its log and database aside): path → (size, mtime)."""
    out = {}
    for path in comfy.base_dir.rglob("*"):
        rel = path.relative_to(comfy.base_dir).as_posix()
        if path.is_file() and rel != "server.log" and not rel.startswith("user/") and "tiny_sdxl" not in rel:
            out[rel] = (path.stat().st_size, path.stat().st_mtime_ns)
    return out


def test_cached_run_writes_nothing_and_the_export_lives_in_the_pack_cache(comfy):
    g, _ = train_graph(lora_name="handover_cached", steps=2)
    comfy.run(g.finalize(), timeout=300)
    exports = sorted(cache(comfy).glob("unet-*.safetensors"))
    assert len(exports) == 1 and not list((comfy.base_dir / "temp").rglob("unet-*"))

    # Same inputs, ComfyUI's own cache cleared, the export deleted: the LoRA is returned before any export.
    exports[0].unlink()
    requests.post(comfy.url + "/free", json={"free_memory": True}, timeout=10)
    time.sleep(1.5)
    before, log_start = files(comfy), len(comfy.log_tail(10**9))
    comfy.run(train_graph(lora_name="handover_cached", steps=2)[0].finalize(), timeout=300)
    assert "already trained from these inputs" in comfy.log_tail(10**9)[log_start:]
    changed = {k: v for k, v in files(comfy).items() if before.get(k) != v}
    # The loss-curve preview (ComfyUI's PreviewImage, in temp/) is the only file of a cached run.
    assert all(k.startswith("temp/") and k.endswith(".png") for k in changed), changed

    # Other settings, same model: trained, the export written once again and reused by the next training.
    comfy.run(train_graph(lora_name="handover_cached", steps=3)[0].finalize(), timeout=300)
    (export,) = cache(comfy).glob("unet-*.safetensors")
    stamp = export.stat().st_mtime_ns
    comfy.run(train_graph(lora_name="handover_cached", steps=2, seed=1)[0].finalize(), timeout=300)
    assert export.stat().st_mtime_ns == stamp and not leftovers(comfy) and not trainer_processes(comfy)


def _file_graph(unet_path, lora_name):
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLFileLoader", unet_path=str(unet_path))
    g.node(
        TRAIN,
        model=loader.out(0),
        clip=loader.out(1),
        vae=loader.out(2),
        images=shaped_image(g, batch=2),
        token="iklan",
        class_word="disc",
        lora_name=lora_name,
        steps=2,
        learning_rate=1e-3,
        rank=2,
        alpha=0.0,
        batch_size=2,
        resolution=64,
        seed=0,
        mixed_precision="no",
        gradient_checkpointing=False,
        flip=False,
        noise_offset=0.0,
    )
    return g.finalize()


def test_a_model_loaded_from_a_file_trains_from_that_file(comfy, tiny_models, tmp_path):
    unet = tmp_path / "my_unet.safetensors"
    tensors = load_file(str(tiny_models["unet"]))
    save_file(tensors, str(unet), metadata={k: v for k, v in _metadata(tiny_models["unet"]).items()})
    for old in cache(comfy).glob("unet-*.safetensors"):
        old.unlink()
    log_start = len(comfy.log_tail(10**9))
    comfy.run(_file_graph(unet, "handover_from_file"), timeout=300)
    assert f"reads the UNet from {unet}" in comfy.log_tail(10**9)[log_start:]
    assert not list(cache(comfy).glob("unet-*.safetensors"))  # no export
    assert (comfy.base_dir / "models" / "loras" / "handover_from_file.safetensors").exists()

    # The file changes on disk while ComfyUI still holds the loaded MODEL: exported instead, never misread.
    key = next(k for k in tensors if k.endswith("out.2.weight"))
    tensors[key] = tensors[key] + 1.0
    save_file(tensors, str(unet), metadata=_metadata(tiny_models["unet"]))
    log_start = len(comfy.log_tail(10**9))
    comfy.run(_file_graph(unet, "handover_changed_file"), timeout=300)
    assert "no longer holds the loaded UNet weights" in comfy.log_tail(10**9)[log_start:]
    assert len(list(cache(comfy).glob("unet-*.safetensors"))) == 1
    assert not leftovers(comfy) and not trainer_processes(comfy)


def _metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_a_model_found_in_comfyuis_model_folders_trains_from_that_file(comfy, tiny_models):
    """No loader record (ComfyUI 0.3.75, custom loaders): the UNet file is found among ComfyUI's model files."""
    folder = comfy.base_dir / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "handover_found.safetensors"
    save_file(load_file(str(tiny_models["unet"])), str(copy))
    try:
        for old in cache(comfy).glob("unet-*.safetensors"):
            old.unlink()
        log_start = len(comfy.log_tail(10**9))
        comfy.run(train_graph(lora_name="handover_found", steps=2, seed=5)[0].finalize(), timeout=300)
        assert f"reads the UNet from {copy}" in comfy.log_tail(10**9)[log_start:]
        assert not list(cache(comfy).glob("unet-*.safetensors"))
    finally:
        copy.unlink()
