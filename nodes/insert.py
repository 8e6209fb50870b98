"""LoRAImg2ImgInsert: paint the subject with its LoRA (paper 001 §3.4; docs/DESIGN.md §4.6, §5.5), over
``alchemy.crop_stitch``.

Per image: grow + feather the mask, crop a context box around it, scale the crop to the model's resolution,
VAE-encode, set the noise mask (ComfyUI's SetLatentNoiseMask), sample like KSampler at ``denoise``, decode, scale
back and stitch with the feathered mask onto the *scene*. ``image`` is only the img2img start inside the repaint
region (e.g. DecayBlur's output); ``scene`` (optional, default ``image``) is what the result is stitched onto, so
pixels where the feathered mask is 0 are the scene's, bit for bit. ``keep`` (optional) is taken out of the feathered
mask: where it is ≥ 0.5 an earlier subject stays as the earlier insert left it, bit for bit. denoise 0 and an
empty mask return the scene.
"""

import logging

import comfy.model_management
import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io

from ..alchemy import crop_stitch, masks
from .checks import check_choice, check_images
from .lora_sampling import apply_lora, sample_region
from .search import search_aliases

NODE = "LoRAImg2ImgInsert"
CROP_MODES = ("crop", "whole image")


def check_scene(image: torch.Tensor, scene: torch.Tensor | None) -> torch.Tensor:
    """The images to stitch onto, one per image: ``scene`` (broadcast from one) or, when not linked, ``image``."""
    if scene is None:
        return image
    if tuple(scene.shape[1:3]) != tuple(image.shape[1:3]):
        raise ValueError(
            f"{NODE}: the scene is {scene.shape[2]}×{scene.shape[1]} but the image is "
            f"{image.shape[2]}×{image.shape[1]}: link the stage-1 image that DecayBlur blurred."
        )
    if scene.shape[-1] != image.shape[-1]:
        raise ValueError(
            f"{NODE}: the scene has {scene.shape[-1]} channels but the image has {image.shape[-1]}: "
            "link the stage-1 image that DecayBlur blurred."
        )
    if scene.shape[0] == image.shape[0]:
        return scene.to(image.device, image.dtype)
    if scene.shape[0] == 1:
        return scene.to(image.device, image.dtype).expand(image.shape[0], -1, -1, -1)
    raise ValueError(
        f"{NODE}: the scene batch has {scene.shape[0]} images but the image batch has "
        f"{image.shape[0]}: give one scene per image, or a single scene for all of them."
    )


def _stitch_masks(image: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor | None, grow: int, feather: int):
    """One mask per image at the image's size, grown and feathered, with ``keep`` taken out."""
    batch, height, width = image.shape[:3]
    mask = masks.match_batch(masks.resize_mask(mask.to(image.device), height, width), batch, NODE)
    stitch_masks = masks.feather_mask(masks.grow_mask(mask, grow), feather)
    if keep is not None:
        keep = masks.match_batch(masks.resize_mask(keep.to(image.device), height, width), batch, NODE)
        stitch_masks = crop_stitch.leave_out(stitch_masks, keep)
    return stitch_masks


class LoRAImg2ImgInsert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_LoRAImg2ImgInsert",
            **search_aliases("insert subject", "subject insert", "repaint subject", "lora inpaint", "image alchemy"),
            display_name="LoRA Img2Img Insert",
            category="Image Alchemy/image",
            description="Puts the learned subject into the masked region: applies the subject LoRA to the model, "
            "repaints a context crop around the mask with img2img (any sampler, native "
            "conditioning) starting from `image`, and stitches it with a feathered edge onto `scene` "
            "(`image` when scene is not linked). Pixels outside the grown and feathered mask are the "
            "scene's, bit-identical; denoise 0 or an empty mask returns the scene unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The base diffusion model (the LoRA is applied to a copy)."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the crop and decodes the result."),
                io.Image.Input(
                    "image",
                    tooltip="The img2img start inside the repaint region (e.g. DecayBlur's "
                    "output). Without a scene linked, also the image the result is "
                    "stitched onto.",
                ),
                io.Mask.Input(
                    "mask",
                    tooltip="Where the subject goes (1 inside). One mask for all images or one per "
                    "image; resized to the image if its size differs.",
                ),
                io.Combo.Input(
                    "lora_name",
                    options=folder_paths.get_filename_list("loras"),
                    tooltip="The subject LoRA from models/loras (UNet part; a text-encoder part must be "
                    "applied with LoraLoader before the prompt is encoded).",
                ),
                io.Float.Input(
                    "lora_strength",
                    default=1.0,
                    min=-10.0,
                    max=10.0,
                    step=0.01,
                    tooltip="How strongly the LoRA modifies the model; 0 samples with the base model.",
                ),
                io.Conditioning.Input("positive", tooltip="Prompt with the subject token, from any prompt node."),
                io.Conditioning.Input("negative", tooltip="What to keep out of the repainted region."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Seed of the sampling noise (image i of a batch gets KSampler's noise for i).",
                ),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input(
                    "cfg",
                    default=7.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale.",
                ),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    tooltip="Sampling algorithm, as in KSampler.",
                ),
                io.Combo.Input(
                    "scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="Noise schedule, as in KSampler."
                ),
                io.Float.Input(
                    "denoise",
                    default=0.75,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="How much of the masked region is repainted (1 = from pure noise); 0 returns "
                    "the scene (or image, when no scene is linked) unchanged, without sampling.",
                ),
                io.Int.Input(
                    "grow", default=8, min=0, max=1024, tooltip="Pixels to grow the mask by before feathering."
                ),
                io.Int.Input(
                    "feather",
                    default=16,
                    min=0,
                    max=1024,
                    tooltip="Width in pixels of the soft edge outside the grown mask; pixels farther out "
                    "are never changed.",
                ),
                io.Combo.Input(
                    "crop_mode",
                    options=list(CROP_MODES),
                    default="crop",
                    tooltip="crop: sample only a context box around the mask, scaled to the resolution. "
                    "whole image: sample the full frame (the mask still limits the change).",
                ),
                io.Float.Input(
                    "context",
                    default=0.5,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="Context kept around the mask in crop mode, as a fraction of the mask box's "
                    "longer side on every side.",
                ),
                io.Int.Input(
                    "resolution",
                    default=1024,
                    min=0,
                    max=8192,
                    step=8,
                    tooltip="Sampling resolution: the crop is scaled to about this many pixels squared "
                    "(aspect kept, multiples of 8). 1024 suits SDXL; 0 keeps the crop's size.",
                ),
                io.String.Input(
                    "lora_name_from_training",
                    optional=True,
                    force_input=True,
                    tooltip="Link Train Subject LoRA's lora_name here to insert the LoRA trained in the "
                    "same graph; it replaces the lora_name choice.",
                ),
                io.Image.Input(
                    "scene",
                    optional=True,
                    tooltip="The unblurred stage-1 image to stitch the result onto: outside the grown and "
                    "feathered mask the output is this image, bit for bit, and inside the "
                    "feathered edge the repaint blends into it. Not linked: the image input "
                    "(older graphs). Same size as image; one scene or one per image.",
                ),
                io.Mask.Input(
                    "keep",
                    optional=True,
                    tooltip="Where this insert must not paint, e.g. the mask of a subject an earlier "
                    "insert put in: where it is 0.5 or more the output is the scene (the earlier result), "
                    "bit for bit, even inside the grown and feathered mask; below 0.5 the repaint fades in. "
                    "Resized to the image; one mask or one per image.",
                ),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The images with the subject inserted.")],
        )

    @classmethod
    def validate_inputs(cls, lora_name, input_types):
        # Our own check of the lora_name list: a LoRA that a linked Train Subject LoRA has yet to write is not in
        # the folder when the prompt is validated.
        if "lora_name_from_training" in (input_types or {}):
            return True
        if lora_name in folder_paths.get_filename_list("loras"):
            return True
        return (
            f"the LoRA '{lora_name}' is not in models/loras: pick one from the list, train one with Train "
            "Subject LoRA, or link its lora_name output to lora_name_from_training."
        )

    @classmethod
    def execute(
        cls,
        model,
        vae,
        image,
        mask,
        lora_name,
        lora_strength,
        positive,
        negative,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise,
        grow,
        feather,
        crop_mode,
        context,
        resolution,
        lora_name_from_training=None,
        scene=None,
        keep=None,
    ) -> io.NodeOutput:
        check_choice(NODE, "crop_mode", crop_mode, CROP_MODES)
        check_images(NODE, image)
        scene = check_scene(image, scene)
        stitch_masks = _stitch_masks(image, mask, keep, grow, feather)
        boxes = [crop_stitch.context_box(m, context, whole_image=crop_mode == "whole image") for m in stitch_masks]
        if all(box is None for box in boxes) or denoise == 0:
            # Nothing to repaint: the scene as it came in (not a VAE round trip of it).
            logging.info("%s: %s, scene returned unchanged", NODE, "denoise 0" if denoise == 0 else "empty mask")
            return io.NodeOutput(scene)
        patched = apply_lora(model, lora_name_from_training or lora_name, lora_strength)
        multiple = vae.spacial_compression_encode()
        results = []
        for i, (img, base, stitch_mask, box) in enumerate(zip(image, scene, stitch_masks, boxes)):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if box is None:
                results.append(base)
                continue
            size = crop_stitch.model_size(box.height, box.width, resolution, multiple)
            start = crop_stitch.img2img_start(img, base, stitch_mask)
            pixels = crop_stitch.resize_image(crop_stitch.crop(start, box), *size)[None]
            noise_mask = masks.resize_mask(crop_stitch.crop(stitch_mask, box)[None], *size)
            generated = sample_region(
                patched, vae, pixels, noise_mask, positive, negative, seed, i, steps, cfg, sampler_name, scheduler,
                denoise,
            )  # fmt: skip
            results.append(crop_stitch.stitch(base, generated[0], stitch_mask, box))
        return io.NodeOutput(torch.stack(results))


NODES = [LoRAImg2ImgInsert]
