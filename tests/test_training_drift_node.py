"""TrainSubjectLoRA's drift-free options through the real ComfyUI server: class images drawn in the graph with
ComfyUI's sampler and cached, APT's views encoded by the wired VAE, every option recorded in the LoRA."""

import json

import numpy as np
from comfy_server import trainer_processes
from PIL import Image
from safetensors import safe_open
from support.training_graphs import leftovers, loras_dir, photo_train_graph
from tiny_models.subjects import synthetic_subject

OPTIONS = dict(
    prior_images=2,
    prior_weight=0.5,
    drift_penalty="delta",
    drift_weight=0.005,
    apt_augment=True,
    apt_augment_p_max=1.0,
    apt_loss_weighting=True,
    apt_features=True,
    apt_feature_weight=0.1,
    apt_attention=True,
    apt_attention_weight=0.1,
)


def test_every_option_trains_through_the_node_and_class_images_are_cached(comfy):
    images, masks = synthetic_subject(2, 64)
    names = []
    for i, (img, mask) in enumerate(zip(images, masks)):
        name = f"ia_drift_{i}.png"
        rgba = np.dstack([img, 1.0 - mask.astype(np.float32)])
        Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(comfy.base_dir / "input" / name)
        names.append(name)
    cache = comfy.base_dir / "models" / "image_alchemy" / "class_cache"  # kept across restarts
    before = set(cache.glob("class-*.safetensors"))
    g, _train = photo_train_graph(
        names, "ia_drift_all", steps=3, with_mask=True, batch_size=2, resolution=64, **OPTIONS
    )
    log_start = len(comfy.log_tail(10**9))
    comfy.run(g.finalize(), timeout=600)
    assert "drawing 2 class images of 'a photo of disc'" in comfy.log_tail(10**9)[log_start:]
    drawn = set(cache.glob("class-*.safetensors")) - before
    assert len(drawn) == 1
    with safe_open(str(drawn.pop()), framework="pt") as f:
        assert f.get_tensor("images").shape == (2, 64, 64, 3)
    with safe_open(str(loras_dir(comfy) / "ia_drift_all.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["image_alchemy.regularizer"] == (
        "prior(2, w=0.5)+drift(delta, λ=0.005)+apt(augment, loss_weight, features=0.1, attention=0.1)"
    )
    assert len(json.loads(meta["image_alchemy.apt_state"])["gamma"]) == 10
    assert json.loads(meta["image_alchemy.settings"])["apt_views"] == 4

    # Another LoRA from the same model, class prompt, count and seed: the class images are not drawn again.
    g, _train = photo_train_graph(names, "ia_drift_prior", steps=2, batch_size=2, resolution=64, prior_images=2)
    log_start = len(comfy.log_tail(10**9))
    comfy.run(g.finalize(), timeout=600)
    assert "reusing 2 cached class images" in comfy.log_tail(10**9)[log_start:]
    assert (loras_dir(comfy) / "ia_drift_prior.safetensors").exists()
    assert not leftovers(comfy) and not trainer_processes(comfy)
