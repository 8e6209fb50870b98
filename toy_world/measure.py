"""Measuring on the toy world: sampling with the trained models, subject LoRAs, the measuring net's readings.

The measuring net reads four things of the object in a picture (heads: class, main colour, second colour,
pattern). Its *identity embedding* is the joint distribution of the three look heads (main colour × second colour
× pattern, the heads taken as independent; not the class: base and LoRA both draw the class). Its cosine is the
product of the three heads' cosines, so two pictures of the same instance score ~1 and an instance that shares
only some of the subject's attributes — a ball of the class's usual colour with a yellow centre — scores near 0.
The concatenation of the three heads (``joint=False``) is kept for comparison: it scores any picture ~0.4, since
the pattern head alone (3 classes) gives every pair a third of its weight. Its CLS feature is what DinoBackbone
returns when the net's folder is given as the DINO backbone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import models, training_names, world

HEADS = {
    "class": len(world.CLASSES),
    "colour": len(world.COLOURS),
    "second": len(world.COLOURS),
    "pattern": len(world.PATTERNS),
}
STEPS, GUIDANCE = 20, 4.0
TIME_IDS = [world.SIZE, world.SIZE, 0, 0, world.SIZE, world.SIZE]


def soften(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation of the measuring net, so it reads decoded pictures as well as drawn ones: a fifth
    each sharp, 2× and 4× blurred, and the 8× mean-colour mosaic (the latent's grid) upsampled nearest or bilinear."""
    pick = torch.randint(0, 5, (len(x),), generator=gen)
    out = x.clone()
    for level, factor, mode in ((1, 2, "bilinear"), (2, 4, "bilinear"), (3, 8, "nearest"), (4, 8, "bilinear")):
        rows = pick == level
        if rows.any():
            small = F.avg_pool2d(x[rows], factor)
            out[rows] = (
                F.interpolate(small, size=x.shape[-2:], mode=mode)
                if mode == "nearest"
                else F.interpolate(small, size=x.shape[-2:], mode=mode, align_corners=False)
            )
    return (out + 0.02 * torch.randn(out.shape, generator=gen)).clamp(0, 1)


def encode_text(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    return embeds.float(), pooled.float()


def fresh_unet(folder):
    """A diffusers UNet on the committed base weights (its own tensors: safe to train or patch)."""
    tensors, metadata = models.read_models(folder)["unet"]
    (
        diffusers_unet_config,
        unet_from_ldm,
    ) = training_names("unet", "diffusers_unet_config", "unet_from_ldm")

    return unet_from_ldm(
        {k[len(models.UNET_PREFIX) :]: v for k, v in tensors.items()},
        diffusers_unet_config(models.unet_config(metadata)),
    )


def lora_settings(subject: world.Subject, steps: int, seed: int = 0, **options):
    (TrainSettings,) = training_names("settings", "TrainSettings")

    return TrainSettings(
        token=subject.token,
        class_word=subject.thing.cls,
        rank=4,
        learning_rate=2e-3,
        steps=steps,
        batch_size=5,
        gradient_accumulation=1,
        seed=seed,
        device="cpu",
        save_precision="fp32",
        **options,
    )


def pixels_of(samples) -> torch.Tensor:
    """Samples → N×3×H×W in −1..1 (what the trainer's encoders take)."""
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1


def subject_data(pipe, subject: world.Subject, settings):
    """The subject's 5 views encoded as fit.encode_subject does (VAE latents, the training prompt)."""
    (augmented_views,) = training_names("augment", "augmented_views")
    (encode_latents,) = training_names("fit", "encode_latents")
    (TrainingData,) = training_names("trainer", "TrainingData")

    pixels = pixels_of(world.subject_views(subject))
    latents = encode_latents(pipe.vae, pixels, settings.seed)
    embeds, pooled = encode_text(pipe, [settings.prompt])
    data = TrainingData(
        latents=latents,
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        time_ids=torch.tensor([TIME_IDS] * len(pixels), dtype=torch.float32),
    )
    if settings.apt_augment:
        data.augmented_latents = encode_latents(
            pipe.vae, augmented_views(pixels, settings.apt_views, settings.seed)[0], settings.seed
        )
    return data


def merge_lora(unet, path, strength: float = 1.0):
    """Adds a kohya LoRA file's ΔW = strength·(α/r)·up·down into the UNet's linear layers (in place)."""
    from safetensors.torch import load_file

    lora = load_file(str(path))
    modules = {"lora_unet_" + name.replace(".", "_"): m for name, m in unet.named_modules()}
    merged = 0
    with torch.no_grad():
        for key in lora:
            if not key.endswith(".lora_down.weight"):
                continue
            stem = key[: -len(".lora_down.weight")]
            down, up = lora[key].float(), lora[stem + ".lora_up.weight"].float()
            alpha = float(lora.get(stem + ".alpha", torch.tensor(down.shape[0])))
            modules[stem].weight += strength * alpha / down.shape[0] * (up @ down)
            merged += 1
    if not merged:
        raise ValueError(f"{path}: no LoRA layers found")
    return unet


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int = STEPS, guidance: float = GUIDANCE) -> np.ndarray:
    """Text-to-image, one seed per prompt, negative prompt "" (what the UNet learnt as unconditioned)."""
    out = []
    for start in range(0, len(prompts), 16):
        chunk, chunk_seeds = prompts[start : start + 16], seeds[start : start + 16]
        images = pipe(
            prompt=chunk,
            negative_prompt=[""] * len(chunk),
            height=world.SIZE,
            width=world.SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="np",
            generator=[torch.Generator().manual_seed(s) for s in chunk_seeds],
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


class MeasuringNet:
    """The trained ViT: class predictions, identity embeddings, CLS features."""

    def __init__(self, folder):
        from transformers import ViTForImageClassification

        self.folder = str(folder)
        self.net = ViTForImageClassification.from_pretrained(self.folder, local_files_only=True).eval()

    @torch.no_grad()
    def logits(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != (world.SIZE, world.SIZE):  # a crop may be full width but not full height
            x = F.interpolate(x, size=(world.SIZE, world.SIZE), mode="bilinear", align_corners=False, antialias=True)
        out = self.net(pixel_values=(x - 0.5) / 0.5).logits
        heads, start = {}, 0
        for name, size in HEADS.items():
            heads[name] = out[:, start : start + size]
            start += size
        return heads

    def classes(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images)["class"].argmax(-1).numpy()

    def identity(self, images: np.ndarray, joint: bool = True) -> torch.Tensor:
        """N × 192 joint look distributions (``joint=False``: the three heads' probabilities concatenated, N × 19)."""
        heads = self.logits(images)
        colour, second, pattern = (heads[k].softmax(-1) for k in ("colour", "second", "pattern"))
        if not joint:
            return torch.cat([colour, second, pattern], -1)
        return (colour[:, :, None, None] * second[:, None, :, None] * pattern[:, None, None, :]).flatten(1)

    def similarity(
        self, images: np.ndarray, references: np.ndarray, centre: torch.Tensor | None = None, joint: bool = True
    ) -> float:
        """Mean cosine similarity of the identity embeddings of every image to every reference; with ``centre``
        (the class's mean embedding, class_centre) both are centred first, so what every instance of the class
        shares counts 0 and only the instance's own look counts."""
        a, b = self.identity(images, joint), self.identity(references, joint)
        if centre is not None:
            a, b = a - centre, b - centre
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return float((a @ b.T).mean())

    def class_centre(self, cls: str, count: int = 256, seed: int = 20_000, joint: bool = True) -> torch.Tensor:
        """Mean identity embedding of ``count`` world instances of the class (random looks, places, backgrounds)."""
        rng = np.random.default_rng(seed)
        images = np.stack(
            [
                world.render(world.random_thing(rng, cls), world.BACKGROUNDS[i % len(world.BACKGROUNDS)], rng)[0]
                for i in range(count)
            ]
        )
        return self.identity(images, joint).mean(0)

    def identified(self, images: np.ndarray, thing: world.Thing) -> float:
        """Share of images whose read main colour, second colour and pattern are all the instance's (by chance a
        ball is read as the blue, yellow-ringed subject about 1 time in 1000)."""
        heads, labels = self.logits(images), world.attribute_labels(thing)
        hit = torch.ones(len(images), dtype=torch.bool)
        for column, name in enumerate(("colour", "second", "pattern"), start=1):
            hit &= heads[name].argmax(-1) == labels[column]
        return float(hit.float().mean())


def with_unet(pipe, unet):
    return type(pipe)(**{**pipe.components, "unet": unet})


def lora_pipe(pipe, folder, lora_path, strength: float = 1.0):
    """The pipeline with a fresh base UNet with the LoRA merged in."""
    return with_unet(pipe, merge_lora(fresh_unet(folder), lora_path, strength))


def lora_path(folder, subject: world.Subject) -> Path:
    return Path(folder) / f"lora_{subject.name}.safetensors"
