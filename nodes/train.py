"""TrainSubjectLoRA: learn a subject from 4–5 photos (paper 001 §3.2) into a kohya LoRA in models/loras.

The node returns the existing LoRA when it was trained from the same inputs (model fingerprint, settings,
prepared photos, VAE and CLIP identities: nodes/train_start.py) before any file is written or any photo
encoded; otherwise it starts the trainer process (training/child.py, training/staged.py; training/ imports no
ComfyUI), which imports and reads the UNet while the node hands the UNet over (its checkpoint file, or a cached
export: nodes/unet_handover.py) and encodes in the graph with the wired VAE and CLIP (the encoders inference will
use); it then frees ComfyUI's models and streams the training's progress to the progress bar and loss chart.
"""
from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path

import torch

import comfy.model_base
import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..training import child, job, staged
from ..training.augment import augmented_views
from ..training.settings import DRIFT_PENALTIES
from . import class_images, train_start, unet_handover
from .train_checks import (available_vram, bf16_native, check_trainable, lora_file_name, sampling_kind,
                           several_tokens_warning)
from ..training.hardware import auto_gradient_checkpointing, auto_mixed_precision
from ..training.lora_file import partial_path, read_metadata
from ..training.plot import loss_curve_image
from ..training.preprocess import resize_and_crop
from ..training.settings import TrainSettings
from ..training.trainer import TrainingData
from ..training.unet import diffusers_unet_config
from ..training.weights import fingerprint

log = logging.getLogger(__name__)

NODE = "TrainSubjectLoRA"
PROGRESS_EVENT = "image_alchemy.train_progress"
JOB_HASH_KEY = "image_alchemy.job_hash"
CHECKPOINTING = ("auto", "on", "off")


def _work_dir() -> Path:
    path = Path(folder_paths.get_temp_directory()) / "image_alchemy_train"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prepare_images(images: torch.Tensor, mask: torch.Tensor | None, resolution: int):
    """IMAGE BHWC → BCHW, resized (shorter side, antialiased) and centre-cropped to resolution² by the trainer's
    own preprocessing (the same as `python -m training fit`); MASK BHW likewise.
    Returns (pixels BHWC for the VAE, masks B×1×R×R or None, SDXL size/crop conditioning per image)."""
    b = images.shape[0]
    pixels, crop = resize_and_crop(images[..., :3].movedim(-1, 1), resolution)
    pixels = pixels.movedim(1, -1)
    time_ids = torch.tensor([crop.time_ids()] * b, dtype=torch.float32)
    masks = None
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[None]
        if mask.shape[0] not in (1, b):
            raise ValueError(f"{NODE}: {mask.shape[0]} masks for {b} images: give one mask per image (or one for all)")
        mask = mask.expand(b, -1, -1) if mask.shape[0] == 1 else mask
        if tuple(mask.shape[-2:]) != tuple(images.shape[1:3]):  # another size: stretched onto the photo first
            mask = torch.nn.functional.interpolate(mask[:, None].float(), size=tuple(images.shape[1:3]),
                                                   mode="bilinear")[:, 0]
        masks, _ = resize_and_crop(mask[:, None].float(), resolution, mode="bilinear")
        if float(masks.max()) <= 0:
            raise ValueError(f"{NODE}: the subject mask is empty: connect a mask that covers the subject, or none")
    return pixels, masks, time_ids


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
    return TrainingData(latents=latents, latents_flipped=flipped, masks=masks, time_ids=time_ids,
                        prompt_embeds=cond.float().cpu(), pooled_prompt_embeds=pooled.float().cpu(),
                        augmented_latents=augmented, augmented_masks=augmented_masks)


def _latent_masks(masks: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(masks, size=latents.shape[-2:], mode="area").clamp(0, 1)


def _add_class_data(data: TrainingData, model, clip, vae, settings: TrainSettings, resolution: int,
                    model_hash: str) -> None:
    """Prior preservation: class images from the base model (cached), encoded like the subject photos."""
    images = class_images.class_images(model, clip, vae, prompt=settings.class_prompt, count=settings.prior_images,
                                       resolution=resolution, seed=settings.seed, model_hash=model_hash)
    pixels, _masks, time_ids = _prepare_images(images, None, resolution)
    data.class_latents = model.model.process_latent_in(vae.encode(pixels)).float().cpu()
    cond, pooled = clip.encode_from_tokens(clip.tokenize(settings.class_prompt), return_pooled=True)
    data.class_prompt_embeds, data.class_pooled_prompt_embeds = cond.float().cpu(), pooled.float().cpu()
    data.class_time_ids = time_ids[:1]


def _class_images_cached(settings: TrainSettings, resolution: int, model_hash: str) -> bool:
    return class_images.cache_path(class_images.cache_folder(), model_hash, settings.class_prompt,
                                   settings.prior_images, resolution, settings.seed).exists()


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


def _checkpointing_choice(value) -> str:
    """auto / on / off; True / False from workflows saved when the input was a switch."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrainSubjectLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageAlchemy_TrainSubjectLoRA",
            display_name="Train Subject LoRA",
            category="Image Alchemy/training",
            description="Trains an attention-only LoRA on 4–5 photos of one subject (paper 001 §3.2, intentional "
                        "overfit, scale 1) and saves it to models/loras. Optional drift-free training: prior "
                        "preservation, the paper-002 drift penalty and APT (paper 003), each off by default. Same "
                        "inputs and settings return the existing LoRA without training again. Cancel stops the "
                        "trainer and leaves no file.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="SDXL model to train on (from your checkpoint loader)."),
                io.Clip.Input("clip", tooltip="Its CLIP: encodes the training prompt 'a photo of <token> <class>'."),
                io.Vae.Input("vae", tooltip="Its VAE: encodes the subject photos once, before training."),
                io.Image.Input("images", tooltip="4–5 photos of the subject (a batch); resized and centre-cropped."),
                io.String.Input("token", default="iklan",
                                tooltip="Rare one-word placeholder with no prior (see Rare Token Picker)."),
                io.String.Input("class_word", default="dog", tooltip="The subject's class, e.g. dog, person, mug."),
                io.String.Input("lora_name", default="iklan_dog",
                                tooltip="File name in models/loras (without .safetensors); '/' for a subfolder."),
                io.Int.Input("steps", default=500, min=1, max=20000, tooltip="Optimizer steps."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1e-2, step=1e-5,
                               tooltip="AdamW learning rate."),
                io.Int.Input("rank", default=8, min=1, max=256, tooltip="LoRA rank."),
                io.Float.Input("alpha", default=0.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="LoRA alpha (scale = alpha/rank); 0 means alpha = rank, the paper's scale 1."),
                io.Int.Input("batch_size", default=1, min=1, max=32,
                             tooltip="Images per micro-batch (see gradient_accumulation)."),
                io.Int.Input("resolution", default=1024, min=64, max=2048, step=64,
                             tooltip="Training size in pixels (SDXL: 1024)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of init, noise and order."),
                io.Combo.Input("mixed_precision", options=["auto", "no", "bf16", "fp16"], default="auto",
                               tooltip="auto: bf16 on GPUs that compute it natively, fp16 on those that only "
                                       "emulate bf16 (T4, V100, RTX 20xx), full precision on the CPU."),
                io.Combo.Input("gradient_checkpointing", options=list(CHECKPOINTING), default="auto",
                               tooltip="Recompute activations in the backward pass: far less GPU memory (1024², "
                                       "batch 1: ≈0.5 instead of ≈7 GiB), about 30% slower. auto: on when a step "
                                       "without it would not fit in the GPU's memory."),
                io.Boolean.Input("flip", default=False, tooltip="Horizontal-flip augmentation (p = 0.5)."),
                io.Float.Input("noise_offset", default=0.0, min=0.0, max=0.5, step=0.01,
                               tooltip="Noise offset; 0.05–0.1 helps very dark or bright subjects."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional subject masks (one per image): the loss is weighted on the subject."),
                # Drift-free options (all off = the paper's intentional overfit); combinable.
                io.Int.Input("prior_images", default=0, min=0, max=1000, optional=True,
                             tooltip="Prior preservation: this many 'a photo of <class>' images are drawn by the "
                                     f"model ({class_images.STEPS} steps, cached) and trained on beside the subject; "
                                     "0 = off. DreamBooth uses 100–200."),
                io.Float.Input("prior_weight", default=1.0, min=0.0, max=10.0, step=0.1, optional=True,
                               tooltip="Weight of the class-image loss (prior preservation)."),
                io.Combo.Input("drift_penalty", options=list(DRIFT_PENALTIES), default="off", optional=True,
                               tooltip="Paper 002 drift penalty: delta = λ·Σ‖ΔW‖² over the LoRA layers (the drift "
                                       "itself), params = λ·Σ‖p‖² over the LoRA weights (the paper's SDXL script)."),
                io.Float.Input("drift_weight", default=0.0, min=0.0, max=1000.0, step=1e-6, optional=True,
                               tooltip="λ of the drift penalty; 0 = the default of the chosen form."),
                io.Boolean.Input("apt_augment", default=False, optional=True,
                                 tooltip="APT adaptive augmentation: zoom-out 1–3× and rotation ±15°, more often "
                                         "where the model overfits (p = clip(γ, 0, p_max))."),
                io.Float.Input("apt_augment_p_max", default=0.5, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="APT: the largest augmentation probability p_max."),
                io.Boolean.Input("apt_loss_weighting", default=False, optional=True,
                                 tooltip="APT adaptive loss weight 1 − γ per timestep bin: overfit bins train less."),
                io.Boolean.Input("apt_features", default=False, optional=True,
                                 tooltip="APT representation stabilization: keep the UNet's feature mean/std close "
                                         "to the base model's."),
                io.Float.Input("apt_feature_weight", default=0.5, min=0.0, max=1000.0, step=0.01, optional=True,
                               tooltip="Weight of the representation-stabilization loss."),
                io.Boolean.Input("apt_attention", default=False, optional=True,
                                 tooltip="APT attention alignment: keep cross-attention maps close to the base "
                                         "model's."),
                io.Float.Input("apt_attention_weight", default=30.0, min=0.0, max=1000.0, step=0.01, optional=True,
                               tooltip="Weight of the attention-alignment loss."),
                io.Int.Input("gradient_accumulation", default=TrainSettings.gradient_accumulation, min=1, max=64,
                             optional=True,
                             tooltip="Micro-batches per optimizer step: each step learns from batch_size × this "
                                     "images at batch_size's memory. 4 = diffusers' SDXL DreamBooth LoRA run."),
            ],
            outputs=[
                io.String.Output(display_name="lora_name",
                                 tooltip="The LoRA's name in models/loras, for the insert node and LoraLoader."),
                io.Image.Output(display_name="loss_curve", tooltip="Training loss per step (raw and running mean)."),
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
        if _checkpointing_choice(gradient_checkpointing) not in CHECKPOINTING:
            return f"{NODE}: gradient_checkpointing must be one of {CHECKPOINTING}, got {gradient_checkpointing!r}"
        return True

    @classmethod
    def execute(cls, model, clip, vae, images, token, class_word, lora_name, steps, learning_rate, rank, alpha,
                batch_size, resolution, seed, mixed_precision, gradient_checkpointing, flip, noise_offset,
                mask=None, prior_images=0, prior_weight=1.0, drift_penalty="off", drift_weight=0.0,
                apt_augment=False, apt_augment_p_max=0.5, apt_loss_weighting=False, apt_features=False,
                apt_feature_weight=0.5, apt_attention=False, apt_attention_weight=30.0,
                gradient_accumulation=TrainSettings.gradient_accumulation) -> io.NodeOutput:
        if not isinstance(model.model, comfy.model_base.SDXL):
            raise ValueError(f"{NODE}: the MODEL is {type(model.model).__name__}, not an SDXL model: connect an "
                             "SDXL checkpoint (the trainer needs SDXL's UNet and its size/pooled-text conditioning)")
        if images.shape[0] and images.shape[-1] not in (3, 4):
            raise ValueError(f"{NODE}: expected RGB or RGBA photos, got {images.shape[-1]} channel(s): load them with "
                             "Load Image")
        check_trainable(model)
        prediction_type, zsnr = sampling_kind(model)
        device = comfy.model_management.get_torch_device()
        precision = auto_mixed_precision(mixed_precision, device.type, bf16_native(device))
        settings = TrainSettings(
            token=token.strip(), class_word=class_word.strip(), rank=rank, alpha=alpha or None,
            learning_rate=learning_rate, steps=steps, batch_size=batch_size, seed=seed,
            mixed_precision=precision, gradient_accumulation=gradient_accumulation,
            gradient_checkpointing=auto_gradient_checkpointing(
                _checkpointing_choice(gradient_checkpointing), device.type, batch_size=batch_size,
                resolution=resolution, mixed_precision=precision, available_bytes=available_vram(device)),
            flip=flip, noise_offset=noise_offset, prediction_type=prediction_type, zero_terminal_snr=zsnr,
            device=str(device),
            prior_images=prior_images, prior_weight=prior_weight, drift_penalty=drift_penalty,
            drift_weight=drift_weight or None, apt_augment=apt_augment, apt_augment_p_max=apt_augment_p_max,
            apt_loss_weighting=apt_loss_weighting, apt_features=apt_features, apt_feature_weight=apt_feature_weight,
            apt_attention=apt_attention, apt_attention_weight=apt_attention_weight,
        ).validate(NODE)
        warning = several_tokens_warning(clip, settings.token)
        if warning:
            log.warning("%s: %s", NODE, warning)
        # Shown on the node (above the chart, and as its progress text); an empty text clears an earlier one.
        _send(cls.hidden.unique_id, {"phase": "warning", "text": warning or ""})
        file_name = lora_file_name(lora_name)
        output = Path(folder_paths.get_folder_paths("loras")[0]) / file_name
        if images.shape[0] < 1:
            raise ValueError(f"{NODE}: no images: connect a batch of 4–5 subject photos")

        # Free ComfyUI's models (this also removes any applied weight patches) before fingerprinting.
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        if model.patches:
            log.warning("%s: the MODEL carries patches (e.g. LoRAs); training uses its base weights only", NODE)
        config = _unet_config(model)
        model_hash = fingerprint(model.model.diffusion_model.state_dict())  # sampled: well under a second
        key = train_start.input_key(model_hash, settings, vae, clip, {"images": images, "mask": mask}, resolution)

        if output.exists() and read_metadata(output).get(JOB_HASH_KEY) == key:  # before anything is written
            log.info("%s: %s already trained from these inputs; not training again", NODE, file_name)
            losses = cls._losses(output)
            _send(cls.hidden.unique_id, {"phase": "cached", "losses": losses})
            return cls._result(file_name, losses)
        pixels, masks, time_ids = _prepare_images(images, mask, resolution)  # also checks the masks
        if output.exists():
            log.warning("%s: %s exists from other inputs or settings; it is replaced when training succeeds",
                        NODE, file_name)
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
            read_early = device.type == "cpu" and not (settings.prior_images and not _class_images_cached(
                settings, resolution, model_hash))
            if read_early:
                staged.write_unet_start(job_dir, settings, unet)
                trainer.advance("unet")
            encoding = time.perf_counter()
            data = _encode(model, clip, vae, pixels, masks, time_ids, settings)
            log.info("%s: encoded %d photos at %d² in %.1f s", NODE, pixels.shape[0], resolution,
                     time.perf_counter() - encoding)
            if settings.prior_images:
                _add_class_data(data, model, clip, vae, settings, resolution, model_hash)
            comfy.model_management.unload_all_models()
            comfy.model_management.soft_empty_cache()
            if not read_early:
                staged.write_unet_start(job_dir, settings, unet)
                trainer.advance("unet")
            job.write_job(job_dir, settings, data, unet_path=unet, output=output,
                          extra_metadata={JOB_HASH_KEY: key, "ss_output_name": Path(file_name).stem})
            trainer.advance("job")
            _send(cls.hidden.unique_id, {"phase": "start", "steps": settings.steps})

            def on_step(event: dict) -> None:
                pbar.update_absolute(event["step"], settings.steps)  # raises when the user cancels
                _send(cls.hidden.unique_id, {"phase": "step", **event})

            trainer.wait(on_step, poll=comfy.model_management.throw_exception_if_processing_interrupted)
        except child.TrainingFailed as e:
            raise RuntimeError(f"{NODE}: training failed: {e}") from e
        finally:
            # Reached on success, error and cancel alike: the child is stopped; no partial file stays.
            if trainer is not None:
                trainer.stop()
            partial_path(output).unlink(missing_ok=True)
            shutil.rmtree(job_dir, ignore_errors=True)
        losses = cls._losses(output)
        _send(cls.hidden.unique_id, {"phase": "done", "losses": losses})
        return cls._result(file_name, losses)

    @staticmethod
    def _losses(path: Path) -> list[float]:
        import json

        return json.loads(read_metadata(path).get("image_alchemy.losses", "[]"))

    @classmethod
    def _result(cls, file_name: str, losses: list[float]) -> io.NodeOutput:
        curve = torch.from_numpy(loss_curve_image(losses))[None]
        return io.NodeOutput(file_name, curve, ui=ui.PreviewImage(curve, cls=cls))


NODES = [TrainSubjectLoRA]
