"""TrainSubjectLoRA: learn a subject from 4–5 photos (paper 001 §3.2; docs/DESIGN.md §4.2) into a kohya LoRA.

The node returns the existing LoRA when it was trained from the same inputs (model fingerprint, settings,
prepared photos, VAE and CLIP identities: nodes/train_start.py) before any file is written or any photo
encoded; otherwise it starts the trainer process (training/child.py, training/staged.py; training/ imports no
ComfyUI), which imports and reads the UNet while the node hands the UNet over (its checkpoint file, or a cached
export: nodes/unet_handover.py) and encodes in the graph with the wired VAE and CLIP (the encoders inference will
use); it then frees ComfyUI's models and streams the training's progress to the progress bar and loss chart.
"""

from __future__ import annotations

import glob
import logging
import shutil
import time
import uuid
from pathlib import Path

import comfy.model_base
import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..alchemy import layout
from ..training import child, job, staged
from ..training.augment import augmented_views
from ..training.lora_file import partial_path, read_metadata
from ..training.plot import loss_curve_image
from ..training.preprocess import prepare
from ..training.preview import PreviewConditioning, read_previews
from ..training.settings import CHECKPOINTING, TrainSettings, checkpointing_choice, from_user_values
from ..training.trainer import TrainingData
from ..training.unet import diffusers_unet_config
from ..training.weights import fingerprint
from . import class_images, train_start, unet_handover
from .checks import check_images
from .train_checks import (
    available_vram,
    bf16_native,
    check_trainable,
    lora_file_name,
    resume_state,
    sampling_kind,
    several_tokens_warning,
)
from .train_inputs import setting_inputs

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
PROGRESS_EVENT = "image_alchemy.train_progress"
JOB_HASH_KEY = "image_alchemy.job_hash"


def _work_dir() -> Path:
    path = Path(folder_paths.get_temp_directory()) / "image_alchemy_train"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prepare_images(
    images: torch.Tensor, mask: torch.Tensor | None, resolution: int, bucket: tuple[int, int] | None = None
):
    """IMAGE BHWC → the SDXL aspect bucket nearest the photos' (or ``bucket``), resized (antialiased) and cut
    around each subject's mask box by the trainer's own preprocessing (the same as `python -m training fit`);
    MASK BHW likewise. Returns (pixels BHWC for the VAE, masks B×1×h×w or None, SDXL size/crop conditioning
    per image)."""
    b = images.shape[0]
    per_image_masks = None
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[None]
        if mask.shape[0] not in (1, b):
            raise ValueError(f"{NODE}: {mask.shape[0]} masks for {b} images: give one mask per image (or one for all)")
        mask = mask.expand(b, -1, -1) if mask.shape[0] == 1 else mask
        if tuple(mask.shape[-2:]) != tuple(images.shape[1:3]):  # another size: stretched onto the photo first
            mask = torch.nn.functional.interpolate(
                mask[:, None].float(), size=tuple(images.shape[1:3]), mode="bilinear"
            )[:, 0]
        if float(mask.max()) <= 0:
            raise ValueError(f"{NODE}: the subject mask is empty: connect a mask that covers the subject, or none")
        per_image_masks = list(mask.float())
    pixels, masks, crops = prepare(list(images[..., :3].movedim(-1, 1)), resolution, per_image_masks, bucket)
    time_ids = torch.tensor([crop.time_ids() for crop in crops], dtype=torch.float32)
    return pixels.movedim(1, -1), masks, time_ids


def _encode(model, clip, vae, pixels, masks, time_ids, settings: TrainSettings) -> TrainingData:
    latent_format = model.model.process_latent_in  # the model's own latent scaling (SDXL: ×0.13025)
    latents = latent_format(vae.encode(pixels)).float().cpu()
    flipped = latent_format(vae.encode(pixels.flip(2))).float().cpu() if settings.flip else None
    cond, pooled = clip.encode_from_tokens(clip.tokenize(settings.prompt), return_pooled=True)
    augmented = augmented_masks = None
    if settings.apt_augment:  # APT's views, encoded once (training/augment.py); BHWC ↔ BCHW around the warp
        views, view_masks = augmented_views(pixels.movedim(-1, 1), settings.apt_views, settings.seed, masks)
        augmented = latent_format(vae.encode(views.movedim(1, -1).contiguous())).float().cpu()
        if view_masks is not None:
            augmented_masks = _latent_masks(view_masks, latents)
    if masks is not None:
        masks = _latent_masks(masks, latents)
    return TrainingData(
        latents=latents,
        latents_flipped=flipped,
        masks=masks,
        time_ids=time_ids,
        prompt_embeds=cond.float().cpu(),
        pooled_prompt_embeds=pooled.float().cpu(),
        augmented_latents=augmented,
        augmented_masks=augmented_masks,
    )


def _latent_masks(masks: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(masks, size=latents.shape[-2:], mode="area").clamp(0, 1)


def _add_class_data(
    data: TrainingData, model, clip, vae, settings: TrainSettings, resolution: int, model_hash: str
) -> None:
    """Prior preservation: class images from the base model (cached), encoded like the subject photos."""
    images = class_images.class_images(
        model,
        clip,
        vae,
        prompt=settings.class_prompt,
        count=settings.prior_images,
        resolution=resolution,
        seed=settings.seed,
        model_hash=model_hash,
    )
    bucket = tuple(int(v) * 8 for v in data.latents.shape[-2:])  # the subject's bucket: one shape for every batch
    pixels, _masks, time_ids = _prepare_images(images, None, resolution, bucket)
    data.class_latents = model.model.process_latent_in(vae.encode(pixels)).float().cpu()
    cond, pooled = clip.encode_from_tokens(clip.tokenize(settings.class_prompt), return_pooled=True)
    data.class_prompt_embeds, data.class_pooled_prompt_embeds = cond.float().cpu(), pooled.float().cpu()
    data.class_time_ids = time_ids[:1]


def _class_images_cached(settings: TrainSettings, resolution: int, model_hash: str) -> bool:
    return class_images.cache_path(
        class_images.cache_folder(), model_hash, settings.class_prompt, settings.prior_images, resolution, settings.seed
    ).exists()


def _preview_conditioning(clip, settings: TrainSettings) -> PreviewConditioning | None:
    """The preview prompts (training prompt, then preview_prompt) and the empty negative, encoded once."""
    if not settings.preview_every:
        return None
    rows = [clip.encode_from_tokens(clip.tokenize(p), return_pooled=True) for p in settings.preview_prompts]
    negative, negative_pooled = clip.encode_from_tokens(clip.tokenize(""), return_pooled=True)
    return PreviewConditioning(
        torch.cat([c for c, _ in rows]).float().cpu(),
        torch.cat([p for _, p in rows]).float().cpu(),
        negative.float().cpu(),
        negative_pooled.float().cpu(),
    )


def _rgb_factors(model) -> dict | None:
    """The model's latent→RGB preview factors (comfy.latent_formats), for the trainer's live view."""
    fmt = model.model.latent_format
    factors = getattr(fmt, "latent_rgb_factors", None)
    return None if factors is None else {"factors": factors, "bias": getattr(fmt, "latent_rgb_factors_bias", None)}


def _live_view(preview: dict | None):
    """The trainer's latent→RGB preview as ComfyUI's progress preview (what KSampler sends)."""
    if not preview or "rgb" not in preview:
        return None
    import base64

    import numpy as np
    from comfy.cli_args import args
    from PIL import Image

    rgb = np.frombuffer(base64.b64decode(preview["rgb"]), np.uint8).reshape(preview["height"], preview["width"], 3)
    return "JPEG", Image.fromarray(rgb), args.preview_size


def _preview_grid(model, vae, previews: list) -> torch.Tensor | None:
    """All previews decoded with the wired VAE: 1 × (rows·H) × (prompts·W) × 3, one row per preview step."""
    if not previews:
        return None
    rows = []
    for _step, latents in previews:
        images = vae.decode(model.model.process_latent_out(latents.float()))[..., :3].float().cpu()  # P×H×W×3
        rows.append(torch.cat(list(images), dim=1))
    return torch.cat(rows, dim=0)[None].clamp(0, 1)


def _unet_config(model) -> dict:
    try:
        return diffusers_unet_config(model.model.model_config.unet_config)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{NODE}: the MODEL is not an SDXL-family UNet ({e}); connect an SDXL checkpoint") from e


def _send(unique_id, payload: dict) -> None:
    from server import PromptServer

    instance = PromptServer.instance
    instance.send_sync(PROGRESS_EVENT, {"node": unique_id, **payload}, instance.client_id)
    if payload.get("phase") == "warning" and payload["text"]:  # ComfyUI's own text area on the node, too
        instance.send_progress_text(payload["text"], unique_id, instance.client_id)


class TrainSubjectLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        core = setting_inputs(optional_groups=False)  # generated from TrainSettings' declarations
        return io.Schema(
            node_id="ImageAlchemy_TrainSubjectLoRA",
            display_name="Train Subject LoRA",
            category="Image Alchemy/training",
            description="Trains an attention-only LoRA on 4–5 photos of one subject (the Image-Alchemy method's intentional "
            "overfit, scale 1) and saves it to models/loras. Optional drift-free training: prior "
            "preservation, a drift penalty (Regularized Personalization without Distributional Drift) and APT (Adaptive Personalized Training), all off. Same "
            "inputs and settings return the existing LoRA without training again. Cancel stops the "
            "trainer and leaves no file.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="SDXL model to train on (from your checkpoint loader)."),
                io.Clip.Input("clip", tooltip="Its CLIP: encodes the training prompt 'a photo of <token> <class>'."),
                io.Vae.Input("vae", tooltip="Its VAE: encodes the subject photos once, before training."),
                io.Image.Input(
                    "images",
                    tooltip="4–5 photos of the subject (a batch); resized to the nearest SDXL "
                    "aspect bucket and cut around the subject (mask) or centred.",
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
                    tooltip="Optional subject masks (one per image): the loss is weighted on the subject "
                    "and the crop keeps the subject's box whole.",
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
        )

    @classmethod
    def validate_inputs(cls, lora_name=None, gradient_checkpointing="auto"):
        # At validation, so a bad name fails the prompt before anything upstream (e.g. Rare Token Picker) runs.
        # A linked lora_name is not known yet: execute checks it.
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
        if not isinstance(model.model, comfy.model_base.SDXL):
            raise ValueError(
                f"{NODE}: the MODEL is {type(model.model).__name__}, not an SDXL model: connect an "
                "SDXL checkpoint (the trainer needs SDXL's UNet and its size/pooled-text conditioning)"
            )
        check_images(NODE, images, what="photos", allow_empty=True)  # no photos: said below, with what to connect
        check_trainable(model)
        prediction_type, zsnr = sampling_kind(model)
        device = comfy.model_management.get_torch_device()
        settings = from_user_values(
            values,
            device_type=device.type,
            bf16_native=bf16_native(device),
            available_bytes=available_vram(device),
            where=NODE,
            prediction_type=prediction_type,
            zero_terminal_snr=zsnr,
            device=str(device),
        )
        warning = several_tokens_warning(clip, settings.token)
        if warning:
            log.warning("%s: %s", NODE, warning)
        # Shown on the node (above the chart, and as its progress text); an empty text clears an earlier one.
        _send(cls.hidden.unique_id, {"phase": "warning", "text": warning or ""})
        file_name = lora_file_name(lora_name)
        output = Path(folder_paths.get_folder_paths("loras")[0]) / file_name
        resume = resume_state(settings.resume_from)
        if images.shape[0] < 1:
            raise ValueError(f"{NODE}: no images: connect a batch of 4–5 subject photos")

        # Free ComfyUI's models (this also removes any applied weight patches) before fingerprinting.
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        if model.patches:
            log.warning("%s: the MODEL carries patches (e.g. LoRAs); training uses its base weights only", NODE)
        config = _unet_config(model)
        model_hash = fingerprint(model.model.diffusion_model.state_dict())  # sampled: well under a second
        resolution = settings.resolution
        key = train_start.input_key(model_hash, settings, vae, clip, {"images": images, "mask": mask}, resolution)

        if output.exists() and read_metadata(output).get(JOB_HASH_KEY) == key:  # before anything is written
            log.info("%s: %s already trained from these inputs; not training again", NODE, file_name)
            losses = cls._losses(output)
            _send(cls.hidden.unique_id, {"phase": "cached", "losses": losses})
            return cls._result(file_name, losses)
        pixels, masks, time_ids = _prepare_images(images, mask, resolution)  # also checks the masks
        if output.exists():
            log.warning(
                "%s: %s exists from other inputs or settings; it is replaced when training succeeds", NODE, file_name
            )
        job_dir = _work_dir() / f"job-{uuid.uuid4().hex[:12]}"
        job_dir.mkdir(parents=True)
        pbar = comfy.utils.ProgressBar(settings.steps)
        trainer = None
        try:
            # Started now: it imports (and on the CPU reads the UNet) while the node hands over and encodes.
            trainer = child.TrainerProcess(job_dir, staged=True)
            unet = unet_handover.unet_source(model, model.model.diffusion_model.state_dict(), config, model_hash)
            # On a GPU the trainer reads the UNet only once ComfyUI's models are freed; on the CPU ComfyUI keeps
            # them in RAM anyway, except while class images are drawn (sampling memory on top of the trainer's).
            read_early = device.type == "cpu" and not (
                settings.prior_images and not _class_images_cached(settings, resolution, model_hash)
            )
            if read_early:
                staged.write_unet_start(job_dir, settings, unet)
                trainer.advance("unet")
            encoding = time.perf_counter()
            data = _encode(model, clip, vae, pixels, masks, time_ids, settings)
            log.info(
                "%s: encoded %d photos at %d² in %.1f s",
                NODE,
                pixels.shape[0],
                resolution,
                time.perf_counter() - encoding,
            )
            if settings.prior_images:
                _add_class_data(data, model, clip, vae, settings, resolution, model_hash)
            preview_cond = _preview_conditioning(clip, settings)  # while CLIP is loaded
            comfy.model_management.unload_all_models()
            comfy.model_management.soft_empty_cache()
            if not read_early:
                staged.write_unet_start(job_dir, settings, unet)
                trainer.advance("unet")
            job.write_job(
                job_dir,
                settings,
                data,
                unet_path=unet,
                output=output,
                resume=resume,
                extra_metadata={JOB_HASH_KEY: key, "ss_output_name": Path(file_name).stem},
                preview=preview_cond,
                preview_rgb=_rgb_factors(model),
            )
            trainer.advance("job")
            _send(cls.hidden.unique_id, {"phase": "start", "steps": settings.steps})

            def on_step(event: dict) -> None:
                preview = event.pop("preview", None)
                # raises when the user cancels; a preview shows on the node as KSampler's does
                pbar.update_absolute(event["step"], settings.steps, _live_view(preview))
                _send(cls.hidden.unique_id, {"phase": "step", **event, "preview": bool(preview)})

            trainer.wait(on_step, poll=comfy.model_management.throw_exception_if_processing_interrupted)
            grid = _preview_grid(model, vae, read_previews(job_dir / job.PREVIEW_DIR))
        except child.TrainingFailed as e:
            raise RuntimeError(f"{NODE}: training failed: {e}") from e
        finally:
            # Reached on success, error and cancel alike: the child is stopped; no partial file stays
            # (checkpoints already written stay: the user asked for them).
            if trainer is not None:
                trainer.stop()
            partial_path(output).unlink(missing_ok=True)
            for partial in output.parent.glob(glob.escape(output.stem) + "-step*.partial"):
                partial.unlink(missing_ok=True)
            for state in output.parent.glob(glob.escape(output.stem) + "-step*.trainstate"):
                if not state.with_suffix(".safetensors").exists():  # cancelled between the state and its LoRA
                    state.unlink(missing_ok=True)
            shutil.rmtree(job_dir, ignore_errors=True)
        losses = cls._losses(output)
        _send(cls.hidden.unique_id, {"phase": "done", "losses": losses})
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


NODES = [TrainSubjectLoRA]
