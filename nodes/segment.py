"""GroundedSAMMask and MaskFromBatch (paper 001 §3.3; docs/DESIGN.md §4.4), over ``alchemy.grounded_sam``.

Its loaders (nodes/loaders.py) give CPU models in eval mode; GroundedSAMMask hands both to ComfyUI's memory
management as ModelPatchers, as core nodes do with CLIP vision models: ``load_models_gpu`` frees room for them
before the run, then they count as loaded models that ComfyUI offloads as soon as the sampler (or anything
else) needs the memory, instead of sitting on the GPU outside its accounting.
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch
from comfy_api.latest import io, ui

from ..alchemy import grounded_sam, mask_select
from .checks import check_images, node_error
from .loaders import NODES as LOADERS
from .loaders import GroundingDinoModel, SamModel
from .search import search_aliases

NODE = "GroundedSAMMask"
MISSING = ("error", "empty mask")
# ComfyUI's own box type (SAM3_Detect's bboxes), where the running version has it (0.3.75 does not).
BOUNDING_BOX = getattr(io, "BoundingBox", None)


class _Held(torch.nn.Module):
    """A plain module around a detector for ComfyUI's ModelPatcher, which sets attributes on the model it holds
    (``device`` among them) that transformers models expose read-only."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


def comfy_patcher(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """The ModelPatcher through which ComfyUI loads and offloads ``module`` (made once per model object)."""
    patcher = module.__dict__.get("_image_alchemy_patcher")
    if patcher is None:
        patcher = comfy.model_patcher.ModelPatcher(
            _Held(module),
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        module.__dict__["_image_alchemy_patcher"] = patcher  # not a submodule: kept out of state_dict / .to()
    return patcher


def load_for_run(*modules: torch.nn.Module) -> torch.device:
    """Loads the modules onto ComfyUI's device through its memory management (freeing room first)."""
    patchers = [comfy_patcher(m) for m in modules]
    comfy.model_management.load_models_gpu(patchers, force_full_load=True)
    return patchers[0].load_device


class GroundedSAMMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_GroundedSAMMask",
            **search_aliases("grounded sam", "grounding dino", "text to mask", "segment subject", "detect subject"),
            display_name="Grounded SAM Mask",
            category="Image Alchemy/mask",
            description="Finds the subjects named by a text prompt (GroundingDINO boxes above a threshold, each "
            "' . '-separated phrase on its own), keeps the first max_objects boxes of each phrase in "
            "the order_by order, segments them with SAM and keeps, per box, the non-empty hypothesis "
            "maximising IoU(mask, box) − λ·area (Image-Alchemy eq. 3). Returns the union mask per "
            "image and one mask per phrase; if_nothing_found and if_several_found decide, visibly on "
            "the preview, when a phrase finds nothing or more boxes than max_objects.",
            inputs=[
                io.Image.Input("image", tooltip="Images to segment; every image gets one mask."),
                GroundingDinoModel.Input("grounding_dino", tooltip="From GroundingDINO Loader."),
                SamModel.Input("sam", tooltip="From SAM Loader."),
                io.String.Input(
                    "prompt",
                    default="dog",
                    tooltip="What to find, e.g. 'dog'. Several phrases "
                    "separated by ' . ' ('dog . cat') are each "
                    "detected on their own and each get a mask in "
                    "phrase_masks, in this order.",
                ),
                io.Float.Input(
                    "box_threshold",
                    default=0.3,
                    min=0.0,
                    max=1.01,
                    step=0.01,
                    tooltip="τ: boxes scoring below this are dropped. Above 1 nothing is ever found.",
                ),
                io.Float.Input(
                    "text_threshold",
                    default=0.25,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Score a word needs to name a box in the preview labels.",
                ),
                io.Float.Input(
                    "area_penalty",
                    default=0.1,
                    min=0.0,
                    max=10.0,
                    step=0.01,
                    tooltip="λ in IoU(M, box) − λ·|M| (|M| as a fraction of the image): higher prefers "
                    "the smaller of SAM's three hypotheses.",
                ),
                io.Int.Input(
                    "max_objects",
                    default=1,
                    min=1,
                    max=64,
                    tooltip="How many boxes of each phrase go into its mask: the first ones in the order_by order.",
                ),
                io.Int.Input(
                    "grow",
                    default=0,
                    min=-256,
                    max=256,
                    tooltip="Pixels to dilate (positive) or erode (negative) the mask.",
                ),
                io.Int.Input(
                    "feather",
                    default=0,
                    min=0,
                    max=256,
                    tooltip="Soft outward edge in pixels (the mask itself stays at full strength).",
                ),
                io.Combo.Input(
                    "if_nothing_found",
                    options=list(grounded_sam.ON_EMPTY),
                    default="empty mask",
                    tooltip="What an image gets when no box is found, or SAM returns only empty masks "
                    "for every box: an empty mask, an error that stops the prompt, or the whole "
                    "image. The preview says which happened.",
                ),
                io.Combo.Input(
                    "order_by",
                    options=list(mask_select.ORDERS),
                    default="most confident",
                    optional=True,
                    tooltip="Which boxes of a phrase are kept when it finds several: the most confident, "
                    "the leftmost or topmost (box centre), or the largest or smallest box. The "
                    "preview numbers the kept boxes in this order ('dog 1', 'dog 2').",
                ),
                io.Combo.Input(
                    "if_several_found",
                    options=list(grounded_sam.ON_SEVERAL),
                    default="use the first",
                    optional=True,
                    tooltip="When a phrase finds more boxes than max_objects: use the first max_objects "
                    "in the order_by order (the preview's black band says how many were found "
                    "and which were kept), or stop the prompt with an error.",
                ),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="One mask per input image (1 = subject)."),
                io.Image.Output(
                    display_name="preview",
                    tooltip="The images with the mask tinted red and the boxes "
                    "outlined (green = in the mask, grey = dropped); "
                    "a black band on top says when nothing was found "
                    "and which if_nothing_found policy was applied.",
                ),
                io.Mask.Output(
                    display_name="phrase_masks",
                    tooltip="One mask per phrase of the prompt, for each image in turn: mask i·P + j is "
                    "phrase j of image i (P phrases), e.g. 'dog . cat' on one image gives "
                    "[dog, cat]. Pick one with Mask From Batch.",
                ),
            ]
            + (
                [
                    BOUNDING_BOX.Output(
                        display_name="bboxes",
                        tooltip="The kept boxes per image (ComfyUI's BOUNDING_BOX, as SAM3_Detect "
                        "gives them): phrases in prompt order, each in the order_by order.",
                    )
                ]
                if BOUNDING_BOX is not None
                else []
            ),
        )

    @classmethod
    def execute(
        cls,
        image,
        grounding_dino,
        sam,
        prompt,
        box_threshold,
        text_threshold,
        area_penalty,
        max_objects,
        grow,
        feather,
        if_nothing_found,
        order_by="most confident",
        if_several_found="use the first",
    ) -> io.NodeOutput:
        check_images(NODE, image)
        bar = comfy.utils.ProgressBar(image.shape[0])
        device = load_for_run(grounding_dino.model, sam)
        try:
            masks, found = grounded_sam.segment_batch(
                image,
                grounding_dino,
                sam,
                prompt,
                box_threshold=box_threshold,
                text_threshold=text_threshold,
                area_penalty=area_penalty,
                max_objects=max_objects,
                on_empty=if_nothing_found,
                grow=grow,
                feather=feather,
                order=order_by,
                on_several=if_several_found,
                device=device,
                progress=bar.update_absolute,
            )
        except grounded_sam.SeveralDetected as e:
            raise ValueError(
                f"{NODE}: {e}. Raise max_objects, choose which to keep with order_by and set "
                f"if_several_found to 'use the first', or raise box_threshold."
            ) from e
        except grounded_sam.NothingDetected as e:
            raise ValueError(
                f"{NODE}: {e}. Lower box_threshold, change the prompt or the SAM model, or set "
                f"if_nothing_found to 'empty mask' or 'whole image'."
            ) from e
        except ValueError as e:
            raise node_error(NODE, e) from e
        return _node_output(cls, image, masks, found)


def _node_output(cls, image, masks, found) -> io.NodeOutput:
    """Masks, preview, phrase masks (and boxes where ComfyUI has the type); the preview and policy notes on the node."""
    preview = grounded_sam.draw_preview(image, masks, found)
    out_device = comfy.model_management.intermediate_device()
    preview = preview.to(out_device, image.dtype)
    # Shown on the node (boxes, mask and any policy note drawn), as well as given as an output; the notes
    # also travel as UI text for API clients.
    shown = ui.PreviewImage(preview, cls=cls).as_dict()
    notes = [f"image {i + 1}: {r.note}" for i, r in enumerate(found) if r.note]
    if notes:
        shown["text"] = ("\n".join(notes),)
    outputs = [masks.to(out_device), preview, grounded_sam.phrase_mask_batch(found).to(out_device)]
    if BOUNDING_BOX is not None:
        outputs.append(grounded_sam.kept_boxes(found))
    return io.NodeOutput(*outputs, ui=shown)


class MaskFromBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_MaskFromBatch",
            **search_aliases("select mask", "mask index", "split masks"),
            display_name="Mask From Batch",
            category="Image Alchemy/mask",
            description="Picks one mask of a MASK batch by its index: one subject of Grounded SAM Mask's "
            "phrase_masks (the prompt's phrases in order), or one object of SAM3_Detect's "
            "individual masks (text prompts in order, each prompt's objects most confident first).",
            inputs=[
                io.Mask.Input("masks", tooltip="A batch of masks, e.g. phrase_masks or SAM3_Detect's masks."),
                io.Int.Input(
                    "index",
                    default=0,
                    min=0,
                    max=4095,
                    tooltip="Which mask, counting from 0: 'dog . cat' gives dog = 0, cat = 1.",
                ),
                io.Combo.Input(
                    "if_missing",
                    options=list(MISSING),
                    default="error",
                    tooltip="When the batch has no mask at that index (e.g. SAM3 found fewer objects): "
                    "stop the prompt with an error, or give an empty mask (the insert then "
                    "returns its scene unchanged).",
                ),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="The mask at that index (a batch of one).")],
        )

    @classmethod
    def execute(cls, masks, index, if_missing) -> io.NodeOutput:
        if masks.ndim == 2:
            masks = masks[None]
        if index < masks.shape[0]:
            return io.NodeOutput(masks[index : index + 1].clone())
        if if_missing == "error":
            raise ValueError(
                f"MaskFromBatch: the batch has {masks.shape[0]} mask(s), so there is no index {index} "
                f"(indices count from 0). Lower index, check the detector found every subject, or "
                f"set if_missing to 'empty mask'."
            )
        return io.NodeOutput(torch.zeros(1, *masks.shape[-2:], dtype=masks.dtype, device=masks.device))


NODES = [*LOADERS, GroundedSAMMask, MaskFromBatch]
