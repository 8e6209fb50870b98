"""TrainSubjectLoRA's checks of its inputs: the LoRA name, the MODEL's family and whether it can be trained, how it
samples, what the machine offers (nodes/train_device.py), a token that splits; ``checked_settings`` runs them and
builds the trainer's settings. Each runs before anything is encoded or written."""

from __future__ import annotations

import logging
import math
import unicodedata
from pathlib import Path

import torch

from ..training.families import FAMILIES, ModelFamily, recognise
from ..training.settings import TrainSettings
from ..training.user_values import from_user_values
from . import train_progress
from .checks import check_images
from .train_device import comfy_machine

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"

# Windows device names: a file called CON or nul.safetensors cannot be created or opened there.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_NAME_PUNCTUATION = set("_-. ")


def lora_name_problem(name: str) -> str | None:
    """Why ``name`` (without .safetensors, '/' between subfolders) is not a safe LoRA file name, or None.

    Letters of any script and digits are fine (ComfyUI and LoraLoader list such files like any other); path
    tricks, control and shell/reserved characters, Windows device names and parts that start with punctuation or
    end with a dot or space are not."""
    if not name:
        return "it is empty"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' folder part"
        bad = sorted({c for c in part if not (c.isalnum() or c in _NAME_PUNCTUATION)})
        if bad:
            return f"it contains {''.join(bad)!r}"
        if not part[0].isalnum() or part[-1] in ". ":
            return f"'{part}' must start with a letter or digit and not end with '.' or a space"
        if part.split(".")[0].strip().lower() in _RESERVED:
            return f"'{part}' is a reserved device name on Windows"
        if len(part.encode("utf-8")) > 200:
            return f"'{part[:20]}…' is longer than 200 bytes"
    return None


def lora_file_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name.strip()).removesuffix(".safetensors")
    problem = lora_name_problem(name)
    if problem:
        raise ValueError(
            f"{NODE}: lora_name {name!r} is not a safe file name ({problem}): use letters, digits, "
            "'_', '-', '.' and spaces (and '/' for a subfolder), e.g. 'iklan_dog'"
        )
    return name + ".safetensors"


def model_family(model) -> ModelFamily:
    """The MODEL's family (training/families), by the classes of its ComfyUI model config."""
    config = model.model.model_config
    found = recognise([c.__name__ for c in type(config).__mro__])
    if found is None:
        raise ValueError(
            f"{NODE}: the MODEL is {type(config).__name__} ({type(model.model).__name__}), a model family the "
            f"trainer does not train: connect a checkpoint of {' or '.join(f.title for f in FAMILIES.values())}"
        )
    return found


def sampling_kind(model) -> tuple[str, bool]:
    """Prediction type and zero-terminal-SNR of the MODEL as it samples: its ``model_sampling`` object, which
    ModelSamplingDiscrete (and similar nodes) replace after loading, not the checkpoint's own model type."""
    import comfy.model_sampling as ms

    title = model_family(model).title
    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, ms.ModelSamplingDiscrete):
        raise ValueError(
            f"{NODE}: the MODEL samples with {type(sampling).__name__}, not {title}'s discrete 1000-step "
            "schedule: train on the model as loaded (without ModelSamplingContinuousEDM / "
            "ModelSamplingSD3-style patches)"
        )
    # The most derived non-module base says what the UNet predicts (ComfyUI mixes it into the sampling class).
    prediction = next(
        (c for c in type(sampling).__mro__ if not issubclass(c, torch.nn.Module) and c is not object), None
    )
    if prediction not in (ms.EPS, ms.V_PREDICTION):
        name = prediction.__name__ if prediction is not None else "nothing"
        raise ValueError(
            f"{NODE}: the MODEL predicts {name}; only epsilon and v-prediction {title} models train here "
            "(set ModelSamplingDiscrete to eps or v_prediction, or remove it)"
        )
    # The trainer noises with the UNet families' betas (0.00085 → 0.012, 1000 steps); another schedule would
    # train off it.
    schedule = (sampling.num_timesteps, sampling.linear_start, sampling.linear_end)
    if schedule[0] != 1000 or not all(math.isclose(a, b) for a, b in zip(schedule[1:], (0.00085, 0.012))):
        raise ValueError(
            f"{NODE}: the MODEL's noise schedule (steps, β start, β end) = {schedule} is not {title}'s "
            "(1000, 0.00085, 0.012), which the trainer uses: train on the model as loaded"
        )
    kind = "v_prediction" if prediction is ms.V_PREDICTION else "epsilon"
    return kind, bool(getattr(sampling, "zsnr", False))


def check_trainable(model, family: ModelFamily) -> None:
    """Refuses, before anything is encoded or written, UNets the trainer cannot train: scaled-fp8 weights (the
    per-layer scales have no place in the diffusers UNet) and UNets with extra input channels (inpainting 9,
    instruct-pix2pix 8: their extra image/mask channels are not part of a subject photo's latent)."""
    config = model.model.model_config
    scales = (
        name.endswith((".scale_weight", ".weight_scale")) for name, _ in model.model.diffusion_model.named_parameters()
    )
    # Read without getattr: ComfyUI's model config logs "you accessed scaled_fp8 … doesn't exist" for a missing
    # attribute, a warning the user would see on every training (0.3.75 sets it on scaled-fp8 models; 0.33 turns
    # them into a quant_config instead).
    quantized = any(_config_value(config, name) is not None for name in ("scaled_fp8", "quant_config"))
    if quantized or any(scales):
        raise ValueError(
            f"{NODE}: the MODEL is a scaled-fp8 checkpoint (fp8 weights with per-layer scales), which "
            "cannot be trained: load the fp16/bf16 version of the checkpoint for training (the LoRA "
            "then also applies to the fp8 one)"
        )
    latent = family.latent_channels
    channels = (config.unet_config.get("in_channels", latent), config.unet_config.get("out_channels", latent))
    if channels != (latent, latent):
        kind = {9: "an inpainting", 8: "an instruct-pix2pix"}.get(channels[0], "a non-standard")
        raise ValueError(
            f"{NODE}: the MODEL's UNet has {channels[0]} input channels, not {family.title}'s {latent}: it is "
            f"{kind} model, whose extra channels a subject photo cannot fill. Train on the base {family.title} "
            "checkpoint (its LoRA also loads on the inpainting model)"
        )


def _config_value(config, name: str):
    """``config.name`` if the model config or its class defines it, else None, without ComfyUI's
    missing-attribute warning."""
    return vars(config).get(name, getattr(type(config), name, None))


def several_tokens_warning(clip, token: str) -> str | None:
    """A word that the tokenizers split still trains, but its pieces carry priors (paper 001 §3.2)."""
    end_token = 49407  # CLIP's end-of-text id (SD1.5's CLIP-L, SDXL's CLIP-L and CLIP-G)
    counts = []
    for batches in clip.tokenize(token).values():
        ids = [t[0] for t in batches[0]]
        counts.append(next((i for i, t in enumerate(ids[1:], 1) if t == end_token), len(ids)) - 1)
    if max(counts, default=1) <= 1:
        return None
    return (
        f"token '{token}' is {max(counts)} tokens for the model's tokenizers, not one: it trains, but a single-token "
        "rare word (see Rare Token Picker) has no prior and learns the subject faster"
    )


def resume_state(name: str) -> Path | None:
    """resume_from (a checkpoint's name in models/loras) → the resume state beside it, or None when empty."""
    import folder_paths

    from ..training.checkpoint import state_path

    name = unicodedata.normalize("NFC", name.strip()).removesuffix(".safetensors")
    if not name:
        return None
    problem = lora_name_problem(name)
    if problem:
        raise ValueError(
            f"{NODE}: resume_from {name!r} is not a safe file name ({problem}): give a checkpoint's name "
            "in models/loras, e.g. iklan_dog-step200"
        )
    path = folder_paths.get_full_path("loras", name + ".safetensors")
    if path is None:
        raise ValueError(
            f"{NODE}: resume_from {name!r} is not in models/loras: give a checkpoint's name as "
            "save_every wrote it, e.g. iklan_dog-step200"
        )
    state = state_path(path)
    if not state.is_file():
        raise ValueError(
            f"{NODE}: resume_from {name!r} has no resume state ({state.name}) beside it: resume from a "
            "checkpoint written with save_every"
        )
    return state


def checked_settings(
    model, clip, images: list, values: dict, unique_id, notes: list[str] = ()
) -> tuple[TrainSettings, torch.device]:
    """The node's inputs checked and turned into the trainer's settings for this device and model family;
    ``images``: the IMAGE input list, ``notes``: warnings about the photos, shown on the node with any of the
    settings'."""
    family = model_family(model)
    for batch in images:  # no photos: said by the node, with what to connect
        check_images(NODE, batch, what="photos", allow_empty=True)
    check_trainable(model, family)
    prediction_type, zsnr = sampling_kind(model)
    device, machine = comfy_machine()  # a device that cannot train is refused here, before anything is encoded
    settings = from_user_values(
        values,
        machine=machine,
        where=NODE,
        model_family=family.name,
        prediction_type=prediction_type,
        zero_terminal_snr=zsnr,
        device=str(device),
    )
    warnings = [w for w in (several_tokens_warning(clip, settings.token), *notes) if w]
    for warning in warnings:
        log.warning("%s: %s", NODE, warning)
    # Shown on the node (above the chart, and as its progress text); an empty text clears an earlier one.
    train_progress.send(unique_id, {"phase": "warning", "text": " · ".join(warnings)})
    return settings, device
