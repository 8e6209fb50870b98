"""The toy world's figures (bench/toy_world.py prints them; tests/test_toy_world.py asserts the stable ones)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import measure, pack_module, training_names, world

# What each drift-free option sets (the node's inputs), compared with plain LoRA (paper 001's overfit): the
# node's defaults, plus two lighter settings of the same options (points of a trade-off curve, not a tuned pick).
OPTIONS = {
    "plain": {},
    "prior": {"prior_images": 8},
    "prior_weight_0.1": {"prior_images": 8, "prior_weight": 0.1},
    "drift_delta": {"drift_penalty": "delta"},
    "drift_delta_1e-5": {"drift_penalty": "delta", "drift_weight": 1e-5},
    "drift_params": {"drift_penalty": "params"},
    "apt": {"apt_augment": True, "apt_features": True, "apt_attention": True},
}
# A LoRA's drift on the toy world varies ×3 with its training seed alone: every option is trained with these.
OPTION_SEEDS = (0, 1, 2)
# Prompts without the token: what the base model knew and a LoRA should not change.
CLASS_PROMPTS = ("a photo of a ball", "a photo of a ball on grass", "a photo of a cube on sand", "a photo of a star")


def subject_prompt(subject: world.Subject, where: str = "") -> str:
    return f"a photo of {subject.token} {subject.thing.cls}" + (f" on {where}" if where else "")


def views(subject: world.Subject) -> np.ndarray:
    return np.stack([s.image for s in world.subject_views(subject)])


def class_accuracy(pipe, net, seeds: int) -> tuple[float, np.ndarray]:
    """Stage 1 draws the class asked for: the measuring net's class reading of 'a photo of a <class>'."""
    prompts = [f"a photo of a {c}" for c in world.CLASSES for _ in range(seeds)]
    truth = np.repeat(np.arange(len(world.CLASSES)), seeds)
    images = measure.generate(pipe, prompts, list(range(len(prompts))))
    return float((net.classes(images) == truth).mean()), images


def subject_images(pipe, subject: world.Subject, seeds: int) -> np.ndarray:
    return measure.generate(pipe, [subject_prompt(subject)] * seeds, list(range(100, 100 + seeds)))


def dino_similarity(images: np.ndarray, references: np.ndarray, backbone) -> tuple[float, float]:
    """(DINO of the images, DINO of the references among themselves), by our evaluation code."""
    metrics = pack_module("alchemy.metrics")

    result = metrics.evaluate(list(images), ["x"] * len(images), list(references), dino=backbone)
    rows = {row.prompt: row for row in result.summary}
    return rows[metrics.OVERALL].dino, rows[metrics.REAL].dino


def object_mask(image: np.ndarray, threshold: float = 60.0, grow: int = 2) -> np.ndarray:
    """The stage-1 object, by colour distance from the border's median colour (the tiny world's backgrounds are
    near-uniform), dilated by ``grow`` px; a centred disc when nothing stands out."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(image.astype(np.float32) - np.median(border, 0), axis=-1)
    mask = distance > threshold
    if mask.sum() < 16:
        yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        mask = (yy - image.shape[0] / 2) ** 2 + (xx - image.shape[1] / 2) ** 2 < (image.shape[0] / 4) ** 2
    masks = pack_module("alchemy.masks")

    plane = torch.from_numpy(mask.astype(np.float32))[None]
    return (masks.grow_mask(plane, grow) if grow else plane)[0].numpy()


def reading(net, image: np.ndarray) -> tuple[str, tuple[int, int, int]]:
    """The measuring net's reading of the object in a picture: 'blue / yellow / ring' and its label indices."""
    heads = net.logits(image[None])
    colour, second, pattern = (int(heads[k].argmax(-1)[0]) for k in ("colour", "second", "pattern"))
    words = (world.COLOUR_NAMES[colour], world.COLOUR_NAMES[second], world.PATTERNS[pattern])
    return " / ".join(words), (colour, second, pattern)


def demo_scene_figures(scene, mask, region, final, grow: int, subject: world.Subject, folder) -> dict:
    """`make demo`'s figures for one toy scene (H×W×3 uint8 pictures, H×W 0..1 masks, as the graph saved them):
    the GroundedSAMMask mask against the drawn object (object_mask, not dilated), the largest pixel change
    (0..255) outside the repaint region (the insert's mask grown by its grow + feather: where its stitch can
    write), and the measuring net's reading of the repainted region (cropped to the mask) in the final picture:
    read as the subject when its main and second colours are the subject's (the pattern is printed, not required:
    at 64 px the net reads the subject's own photos' yellow centre as two-tone 3 times in 5)."""
    masks, metrics = pack_module("alchemy.masks"), pack_module("alchemy.metrics")

    drawn = object_mask(scene, grow=0) > 0.5
    found = np.asarray(mask) > 0.5
    union = (drawn | found).sum()
    repaint = masks.grow_mask(torch.from_numpy(np.asarray(region, np.float32))[None], grow)[0].numpy() > 0
    diff = np.abs(final.astype(np.int16) - scene.astype(np.int16)).max(-1)
    net = measure.MeasuringNet(Path(folder) / "measure_vit")
    read, labels = (
        ("nothing (empty mask)", None) if not found.any() else reading(net, metrics.crop_to_mask(final, found))
    )
    return {
        "mask_iou_with_drawn_object": round(float((drawn & found).sum() / union) if union else 0.0, 3),
        "pixels_changed_outside_repaint": int(diff[~repaint].max()) if (~repaint).any() else 0,
        "repaint_share_of_picture": round(float(repaint.mean()), 3),
        "read_in_repainted_region": read,
        "read_as_subject": labels is not None and labels[:2] == world.attribute_labels(subject.thing)[1:3],
    }


def insert(
    pipe,
    lora_pipe,
    scene: np.ndarray,
    mask: np.ndarray,
    prompt: str,
    seed: int,
    denoise: float = 0.9,
    feather: int = 2,
    context: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """LoRAImg2ImgInsert's steps (alchemy.crop_stitch: context box, model size, img2img start, stitch) with diffusers'
    masked img2img as the sampler; returns (result uint8, stitch mask). Outside the stitch mask the scene's
    pixels are copied."""
    from diffusers import StableDiffusionXLInpaintPipeline

    crop_stitch, masks = pack_module("alchemy.crop_stitch"), pack_module("alchemy.masks")

    image = torch.from_numpy(scene).float() / 255.0
    stitch_mask = masks.feather_mask(torch.from_numpy(mask)[None], feather)[0]
    box = crop_stitch.context_box(stitch_mask, context)
    size = crop_stitch.model_size(box.height, box.width, world.SIZE, 8)
    start = crop_stitch.img2img_start(image, image, stitch_mask)
    pixels = crop_stitch.resize_image(crop_stitch.crop(start, box), *size)
    noise_mask = masks.resize_mask(crop_stitch.crop(stitch_mask, box)[None], *size)[0]
    inpaint = StableDiffusionXLInpaintPipeline(**lora_pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = inpaint(
            prompt=prompt,
            negative_prompt="",
            image=pixels.permute(2, 0, 1)[None],
            mask_image=noise_mask[None, None],
            height=size[0],
            width=size[1],
            strength=denoise,
            num_inference_steps=measure.STEPS,
            guidance_scale=measure.GUIDANCE,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
    result = crop_stitch.stitch(image, out[0].permute(1, 2, 0).clamp(0, 1), stitch_mask, box)
    return (result.numpy() * 255).round().astype(np.uint8), stitch_mask.numpy()


def insert_figures(pipe, lora_pipe, net, subject: world.Subject, scenes: int, find=None, name="insert") -> dict:
    """Stage 1 (base, class word) → object mask → stage 2 (LoRA, token) on ``scenes`` scenes. ``find(scene,
    class word)`` gives the mask (default: object_mask, the drawn object); figures are named toy_<name>_*."""
    crop_to_mask = pack_module("alchemy.metrics").crop_to_mask

    refs = views(subject)
    inside_after, inside_before, changed_outside, changed_inside, found = [], [], [], [], []
    for i in range(scenes):
        background = world.BACKGROUNDS[i % len(world.BACKGROUNDS)]
        scene = measure.generate(pipe, [f"a photo of a {subject.thing.cls} on {background}"], [200 + i])[0]
        mask = object_mask(scene) if find is None else find(scene, subject.thing.cls)
        found.append(bool((mask > 0.5).any()))
        if not found[-1]:  # nothing found: the insert returns the scene (its empty-mask policy)
            continue
        result, stitch_mask = insert(pipe, lora_pipe, scene, mask, subject_prompt(subject, background), 300 + i)
        inside_after.append(net.similarity(crop_to_mask(result, mask)[None], refs))
        inside_before.append(net.similarity(crop_to_mask(scene, mask)[None], refs))
        outside = stitch_mask == 0
        diff = np.abs(result.astype(np.int16) - scene.astype(np.int16)).max(-1)
        changed_outside.append(int(diff[outside].max()) if outside.any() else 0)
        changed_inside.append(float(diff[~outside].mean()))
    out = {
        f"toy_{name}_subject_similarity_in_mask": float(np.mean(inside_after)) if inside_after else 0.0,
        f"toy_{name}_subject_similarity_scene_in_mask": float(np.mean(inside_before)) if inside_before else 0.0,
        f"toy_{name}_changed_outside_repaint": float(max(changed_outside, default=0)),
        f"toy_{name}_mean_change_inside_repaint": float(np.mean(changed_inside)) if changed_inside else 0.0,
    }
    if find is not None:
        out[f"toy_{name}_scenes_with_a_mask"] = float(np.mean(found))
    return out


def detected_mask(detector, sam, grow: int = 2, **settings):
    """``find`` for insert_figures: GroundedSAMMask's mask (toy_world.detectors.segment with ``settings``), grown
    like object_mask."""
    from . import detectors

    masks = pack_module("alchemy.masks")

    def find(scene: np.ndarray, cls: str) -> np.ndarray:
        mask = torch.from_numpy(detectors.segment(detector, sam, scene, cls, **settings)[0])[None]
        return masks.grow_mask(mask, grow)[0].numpy() if mask.any() else mask[0].numpy()

    return find


def train_option(folder, pipe, subject: world.Subject, name: str, steps: int, seed: int = 0):
    """A LoRA trained in-process with one drift-free option; returns (trained diffusers UNet with the adapter,
    seconds, the kohya tensors as saved). Prior preservation's class images are drawn by the base pipeline
    (training.fit.add_class_data)."""
    (add_class_data,) = training_names("fit", "add_class_data")
    (train,) = training_names("trainer", "train")
    settings = measure.lora_settings(subject, steps=steps, seed=seed, **OPTIONS[name])
    data = measure.subject_data(pipe, subject, settings)
    if settings.prior_images:
        add_class_data(pipe, data, settings, world.SIZE, model_hash="toy_world", steps=measure.STEPS)
    unet = measure.fresh_unet(folder)
    t0 = time.perf_counter()
    result = train(unet, data, settings)
    return unet.eval(), time.perf_counter() - t0, result.kohya_state_dict


def drift(base_images: np.ndarray, tuned_images: np.ndarray) -> float:
    """Mean squared pixel difference (0..1 scale) between tuned and base images of the same prompts and seeds."""
    a, b = base_images.astype(np.float64) / 255, tuned_images.astype(np.float64) / 255
    return float(((a - b) ** 2).mean())


def subject_leak(pipe, net, subject: world.Subject, seeds: int) -> float:
    """Share of 'a photo of a <class>' pictures whose main colour reads as the subject's (language drift: the
    class word drawing the subject; the base draws a blue ball about 1 time in 40)."""
    images = measure.generate(pipe, [f"a photo of a {subject.thing.cls}"] * seeds, list(range(900, 900 + seeds)))
    colour = net.logits(images)["colour"].argmax(-1)
    return float((colour == world.COLOUR_NAMES.index(subject.thing.colour)).float().mean())


def class_prompt_images(pipe, seeds: int) -> np.ndarray:
    prompts = [p for p in CLASS_PROMPTS for _ in range(seeds)]
    return measure.generate(pipe, prompts, list(range(500, 500 + len(prompts))))


def token_figures(pipe, backbone, class_word: str, rare: str, seeds: int) -> dict[str, float]:
    """RareTokenPicker's measure (alchemy.token_scoring, image-encoder path, the node's prompt template
    'a photo of {token}'): mean pairwise similarity of seed images, calibrated between the class word (1) and
    the empty prompt (0). ``other`` is a second world word scored like a candidate."""
    token_scoring = pack_module("alchemy.token_scoring")

    def images(token):
        prompt = f"a photo of {token}" if token else ""
        return measure.generate(pipe, [prompt] * seeds, list(range(700, 700 + seeds)))

    raw = {}
    for key, token in (
        ("class_word", class_word),
        ("empty", ""),
        ("rare", rare),
        ("other_world_word", "star" if class_word != "star" else "cube"),
    ):
        pictures = images(token)
        raw[key] = token_scoring.similarity(pictures, backbone.embed_images(list(pictures)).numpy())[0]
    calibration = token_scoring.Calibration(raw["class_word"], raw["empty"])
    return {
        "toy_token_prior_class_word": raw["class_word"],
        "toy_token_prior_rare": raw["rare"],
        "toy_token_prior_empty_prompt": raw["empty"],
        "toy_token_prior_other_world_word": raw["other_world_word"],
        "toy_token_calibrated_prior_rare": calibration.prior(raw["rare"]) or 0.0,
        "toy_token_calibrated_prior_other_world_word": calibration.prior(raw["other_world_word"]) or 0.0,
    }
