"""TrainSubjectLoRA: learn a subject from 4–5 photos (paper 001 §3.2; docs/DESIGN.md §4.2) into a kohya LoRA.

The node returns the existing LoRA when it was trained from the same inputs (model fingerprint, settings,
prepared photos, VAE and CLIP identities: nodes/train_start.py) before any file is written or any photo
encoded; otherwise it starts the trainer process (training/child.py, training/staged.py; training/ imports no
ComfyUI), which imports and reads the UNet while the node hands the UNet over (its checkpoint file, or a cached
export: nodes/unet_handover.py) and encodes in the graph with the wired VAE and CLIP (the encoders inference will
use); it then frees ComfyUI's models and streams the training's progress to the progress bar and loss chart.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..alchemy import layout
from ..training import child
from ..training.families import family_named
from ..training.lora_file import read_metadata
from ..training.plot import loss_curve_image
from ..training.settings import CHECKPOINTING
from ..training.user_values import checkpointing_choice
from ..training.weights import fingerprint
from . import train_photos, train_progress, train_start
from .search import search_aliases
from .train_checks import (
    checked_settings,
    lora_file_name,
    resume_state,
)
from .train_encode import prepare_images
from .train_inputs import setting_inputs
from .train_run import JOB_HASH_KEY, TrainingRequest, clean_up, hand_over_and_train

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"


def _work_dir() -> Path:
    path = Path(folder_paths.get_temp_directory()) / "image_alchemy_train"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unet_config(model, family) -> dict:
    try:
        return family.denoiser_config(model.model.model_config.unet_config)
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"{NODE}: the MODEL's {family.title} UNet has a layout the trainer cannot convert ({e}); connect a "
            f"{family.title} checkpoint of the standard architecture"
        ) from e


class TrainSubjectLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        core = setting_inputs(optional_groups=False)  # generated from TrainSettings' declarations
        return io.Schema(
            node_id="ImageAlchemy_TrainSubjectLoRA",
            **search_aliases("train lora", "dreambooth", "lora training", "subject lora", "fine-tune"),
            display_name="Train Subject LoRA",
            category="Image Alchemy/training",
            description="Trains an attention-only LoRA on 4–5 photos of one subject (the Image-Alchemy method's intentional "
            "overfit, scale 1) and saves it to models/loras. Optional drift-free training: prior "
            "preservation, a drift penalty (Regularized Personalization without Distributional Drift) and APT (Adaptive Personalized Training), all off. Same "
            "inputs and settings return the existing LoRA without training again. Cancel stops the "
            "trainer and leaves no file.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="SD1.5 or SDXL model to train on (from your checkpoint loader)."),
                io.Clip.Input("clip", tooltip="Its CLIP: encodes the training prompt 'a photo of <token> <class>'."),
                io.Vae.Input("vae", tooltip="Its VAE: encodes the subject photos once, before training."),
                io.Image.Input(
                    "images",
                    tooltip="4–5 photos of the subject, best as a list (Photo List): each keeps its own size, "
                    "is resized to the model's aspect bucket and cut around the subject (mask) or centred. A "
                    "batch also works, but Image Batch has already cropped every photo to the first one's "
                    "aspect.",
                ),
                *core[:2],  # token, class_word
                io.String.Input(
                    "lora_name",
                    default="iklan_dog",
                    tooltip="File name in models/loras (without .safetensors); '/' for a subfolder.",
                ),
                *core[2:],
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional subject masks, one per photo in the photos' order (a list or a batch; "
                    "one mask: for every photo): the loss is weighted on the subject and the crop keeps "
                    "the subject's box whole.",
                ),
                *setting_inputs(optional_groups=True),  # drift-free options (all off = the paper's overfit), …
            ],
            outputs=[
                io.String.Output(
                    display_name="lora_name",
                    tooltip="The LoRA's name in models/loras, for the insert node and LoraLoader.",
                ),
                io.Image.Output(display_name="loss_curve", tooltip="Training loss per step (raw and running mean)."),
                io.Image.Output(
                    display_name="previews",
                    tooltip="The sample previews decoded with the wired VAE: one row per preview step, "
                    "one column per prompt (training prompt, preview_prompt); black when "
                    "preview_every is 0 or the LoRA was already trained.",
                ),
            ],
            hidden=[io.Hidden.unique_id],
            is_input_list=True,  # photos of different sizes arrive as a list; every other input as a list of one
        )

    @classmethod
    def validate_inputs(cls, lora_name=(None,), gradient_checkpointing=("auto",)):
        # At validation, so a bad name fails the prompt before anything upstream (e.g. Rare Token Picker) runs.
        # A linked lora_name is not known yet (None): execute checks it. Inputs are lists (is_input_list).
        lora_name, gradient_checkpointing = _first(lora_name), _first(gradient_checkpointing)
        if isinstance(lora_name, str):
            try:
                lora_file_name(lora_name)
            except ValueError as e:
                return str(e)
        if checkpointing_choice(gradient_checkpointing) not in CHECKPOINTING:
            return f"{NODE}: gradient_checkpointing must be one of {CHECKPOINTING}, got {gradient_checkpointing!r}"
        return True

    @classmethod
    def execute(cls, model, clip, vae, images, lora_name, mask=None, **values) -> io.NodeOutput:
        # Lists (is_input_list): the photos and masks as wired, every other input a list of one.
        model, clip, vae, lora_name = _first(model), _first(clip), _first(vae), _first(lora_name)
        values = {name: _first(value) for name, value in values.items()}
        photos = train_photos.photo_list(images)
        masks = train_photos.mask_list(mask, len(photos))
        settings, device = checked_settings(
            model, clip, images, values, cls.hidden.unique_id, notes=train_photos.photo_warnings(images)
        )
        file_name = lora_file_name(lora_name)
        output = Path(folder_paths.get_folder_paths("loras")[0]) / file_name
        resume = resume_state(settings.resume_from)
        if not photos:
            raise ValueError(f"{NODE}: no images: connect 4–5 subject photos (e.g. through Photo List)")

        # Free ComfyUI's models (this also removes any applied weight patches) before fingerprinting.
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        if model.patches:
            log.warning("%s: the MODEL carries patches (e.g. LoRAs); training uses its base weights only", NODE)
        family = family_named(settings.model_family)
        config = _unet_config(model, family)
        model_hash = fingerprint(model.model.diffusion_model.state_dict())  # sampled: well under a second
        resolution = settings.training_resolution
        key = train_start.input_key(model_hash, settings, vae, clip, {"images": images, "mask": mask}, resolution)

        if output.exists() and read_metadata(output).get(JOB_HASH_KEY) == key:  # before anything is written
            log.info("%s: %s already trained from these inputs; not training again", NODE, file_name)
            losses = cls._losses(output)
            train_progress.send(cls.hidden.unique_id, {"phase": "cached", "losses": losses})
            return cls._result(file_name, losses)
        photos = prepare_images(photos, masks, resolution, family=family)  # also checks the masks
        log.info(
            "%s: %d photos → the %d×%d bucket: %s",
            NODE,
            len(photos.crops),
            photos.pixels.shape[2],
            photos.pixels.shape[1],
            ", ".join(f"{c.width}×{c.height} cut at ({c.left}, {c.top})" for c in photos.crops),
        )
        if output.exists():
            log.warning(
                "%s: %s exists from other inputs or settings; it is replaced when training succeeds", NODE, file_name
            )
        job_dir = _work_dir() / f"job-{uuid.uuid4().hex[:12]}"
        job_dir.mkdir(parents=True)
        trainer = None
        try:
            # Started now: it imports (and on the CPU reads the UNet) while the node hands over and encodes.
            trainer = child.TrainerProcess(job_dir, staged=True)
            request = TrainingRequest(
                model, clip, vae, photos, settings, device, config, model_hash, key, output, resume,
                cls.hidden.unique_id,
            )  # fmt: skip
            grid = hand_over_and_train(trainer, job_dir, request)
        except child.TrainingFailed as e:
            raise RuntimeError(f"{NODE}: training failed: {e}") from e
        finally:
            # Reached on success, error and cancel alike: the child is stopped; no partial file stays
            # (checkpoints already written stay: the user asked for them).
            clean_up(trainer, output, job_dir)
        losses = cls._losses(output)
        train_progress.send(cls.hidden.unique_id, {"phase": "done", "losses": losses})
        return cls._result(file_name, losses, grid)

    @staticmethod
    def _losses(path: Path) -> list[float]:
        import json

        return json.loads(read_metadata(path).get("image_alchemy.losses", "[]"))

    @classmethod
    def _result(cls, file_name: str, losses: list[float], grid: torch.Tensor | None = None) -> io.NodeOutput:
        curve = layout.to_torch(loss_curve_image(losses))[None]
        grid = torch.zeros(1, 64, 64, 3) if grid is None else grid
        return io.NodeOutput(file_name, curve, grid, ui=ui.PreviewImage(curve, cls=cls))


def _first(value):
    """An input of a node with ``is_input_list``: the list's first item (a widget gives a list of one)."""
    return value[0] if isinstance(value, (list, tuple)) and value else value


NODES = [TrainSubjectLoRA, *train_photos.NODES]
