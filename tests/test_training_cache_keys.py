"""TrainSubjectLoRA's caches, in-process on ComfyUI's own classes: the "already trained" key is computed from the
node's inputs without encoding a photo and changes with each of them (nodes/train_start.py); class images
(prior preservation) are kept under a size limit, least recently used sets first out (their folder,
models/image_alchemy/class_cache, is checked through the server in test_training_drift_node.py)."""

import os

import pytest
import torch
from image_alchemy.training.settings import TrainSettings
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def comfy_parts(tiny_models):
    import json

    import comfy.sd
    import comfy.sdxl_clip
    import comfy.supported_models_base
    import comfy.utils
    from image_alchemy.nodes import class_images, train_start

    def vae(shift=0.0):
        sd = comfy.utils.load_torch_file(str(tiny_models["vae"]), safe_load=True)
        if shift:
            sd = {k: v + shift if v.is_floating_point() and v.dim() > 1 else v for k, v in sd.items()}
        return comfy.sd.VAE(sd=sd)

    def clip(shift=0.0):  # as the test loader node builds it (scripts/devkit/tiny_pack)
        sd, metadata = comfy.utils.load_torch_file(str(tiny_models["clip"]), safe_load=True, return_metadata=True)
        if shift:
            sd = {k: v + shift if v.is_floating_point() and v.dim() > 1 else v for k, v in sd.items()}
        target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
        options = {
            "dtype": torch.float32,
            "clip_l_model_config": json.loads(metadata["tiny_sdxl.clip_l_config"]),
            "clip_g_model_config": json.loads(metadata["tiny_sdxl.clip_g_config"]),
        }
        model = comfy.sd.CLIP(target, parameters=comfy.utils.calculate_parameters(sd), model_options=options)
        model.load_sd(sd, full_model=True)
        return model

    return train_start, class_images, vae, clip


def test_the_key_follows_every_input_but_not_gradient_checkpointing(comfy_parts):
    """Without encoding or even resizing anything: a cache hit costs fingerprints and one hash of the inputs."""
    train_start, _, make_vae, make_clip = comfy_parts
    vae, clip = make_vae(), make_clip()
    settings = TrainSettings(token="iklan", class_word="disc", device="cpu")
    g = torch.Generator().manual_seed(0)
    tensors = {"images": torch.rand(2, 96, 64, 3, generator=g), "mask": None}
    key = train_start.input_key("m1", settings, vae, clip, tensors, 64)
    assert key == train_start.input_key("m1", settings, make_vae(), make_clip(), dict(tensors), 64)  # new objects
    changed_pixel = {**tensors, "images": tensors["images"].clone()}
    changed_pixel["images"][1, 7, 9, 2] += 1 / 255
    with_mask = {**tensors, "mask": torch.ones(2, 96, 64)}
    patched = clip.clone()
    weights = clip.cond_stage_model.state_dict()
    name = next(k for k in patched.get_key_patches() if k.endswith("mlp.fc1.weight"))
    assert patched.add_patches({name: (torch.full_like(weights[name], 0.01),)}, 1.0) == [name]  # a "diff" patch
    skip = clip.clone()
    skip.clip_layer(-1)
    others = [
        train_start.input_key("m2", settings, vae, clip, tensors, 64),
        train_start.input_key(
            "m1", TrainSettings(token="iklan", class_word="disc", device="cpu", seed=1), vae, clip, tensors, 64
        ),
        train_start.input_key(
            "m1", TrainSettings(token="ffin", class_word="disc", device="cpu"), vae, clip, tensors, 64
        ),
        train_start.input_key("m1", settings, make_vae(0.01), clip, tensors, 64),
        train_start.input_key("m1", settings, vae, make_clip(0.01), tensors, 64),
        train_start.input_key("m1", settings, vae, patched, tensors, 64),
        train_start.input_key("m1", settings, vae, skip, tensors, 64),
        train_start.input_key("m1", settings, vae, clip, changed_pixel, 64),
        train_start.input_key("m1", settings, vae, clip, with_mask, 64),
        train_start.input_key("m1", settings, vae, clip, tensors, 128),
    ]
    assert len({key, *others}) == 1 + len(others)
    checkpointed = TrainSettings(token="iklan", class_word="disc", device="cpu", gradient_checkpointing=True)
    assert train_start.input_key("m1", checkpointed, vae, clip, tensors, 64) == key


def test_class_images_are_evicted_least_recently_used_first(comfy_parts, tmp_path):
    _, class_images, _, _ = comfy_parts
    paths = []
    for i in range(4):  # 4 sets of ~1 MB, used in this order (oldest first)
        path = class_images.cache_path(tmp_path, f"m{i}", "a photo of disc", 4, 256, 0)
        save_file({"images": torch.full((4, 256, 256, 1), i, dtype=torch.uint8)}, str(path))
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
        paths.append(path)
    os.utime(paths[0])  # set 0 was just reused: now the most recent
    size = paths[0].stat().st_size
    removed = class_images.evict(tmp_path, keep=paths[3], max_bytes=2 * size)
    assert removed == [paths[1], paths[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([paths[0].name, paths[3].name])
    # The set just written stays even when it alone is over the limit.
    assert class_images.evict(tmp_path, keep=paths[3], max_bytes=1) == [paths[0]] and paths[3].exists()
