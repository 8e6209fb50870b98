"""The subject photos as TrainSubjectLoRA receives them, and the Photo List node that keeps each at its own size.

The node takes its IMAGE and MASK inputs as lists (``is_input_list``): a list (Photo List, or a folder loader such
as ComfyUI's Load Image Dataset from Folder) gives each photo its own size and aspect, so the subject-aware crop and
the SDXL bucket see the photo as it was taken; a batch (the old ImageBatch wiring) arrives as a list of one and
still trains. ImageBatch scales and centre-crops every photo to the first one's size before our node runs; what
can be told afterwards is that a photo loaded from an 8-bit file holds only multiples of 1/255, and a bilinearly
rescaled one does not (:func:`rescaled_photos`). Photos already of one size, or all generated (off the 8-bit grid
from the start), cannot be told apart from untouched ones.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .search import search_aliases

NODE = "TrainSubjectLoRA"
PHOTO_INPUTS = 8
# A photo read from an 8-bit file: every value k/255 (float32 rounding: within 1e-4 of the grid). Bilinear
# rescaling puts most values between grid steps; a photo with more than this share off the grid was rescaled
# (or generated).
OFF_GRID_SHARE = 0.2
_GRID_TOLERANCE = 1e-3


def photo_list(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The IMAGE input list (each B×H×W×C) → one H×W×C tensor per photo, in order."""
    return [photo for batch in images for photo in batch]


def mask_list(masks: list[torch.Tensor] | None, count: int) -> list[torch.Tensor] | None:
    """The MASK input list (each B×H×W or H×W) → one H×W mask per photo (one mask given: for every photo)."""
    if not masks:
        return None
    flat = [m for batch in masks for m in (batch[None] if batch.dim() == 2 else batch)]
    if len(flat) == 1:
        return flat * count
    if len(flat) != count:
        raise ValueError(
            f"{NODE}: {len(flat)} masks for {count} photos: give one mask per photo, in the photos' order "
            "(e.g. the segmenter run on the same Photo List), or one mask for all"
        )
    return flat


def off_grid_share(photo: torch.Tensor) -> float:
    """Share of the photo's RGB values that are not multiples of 1/255."""
    scaled = photo[..., :3].float() * 255.0
    return float(((scaled - scaled.round()).abs() > _GRID_TOLERANCE).float().mean())


def rescaled_photos(images: list[torch.Tensor]) -> list[int]:
    """1-based positions (over all photos) of the photos that evidently were rescaled to their batch's first
    photo's size: in a batch of several photos whose first one lies on the 8-bit grid (loaded from a file), those
    that do not (ImageBatch scales every later photo bilinearly; the first it leaves as it is)."""
    rescaled, position = [], 0
    for batch in images:
        if batch.shape[0] > 1 and off_grid_share(batch[0]) <= OFF_GRID_SHARE / 10:
            rescaled += [
                position + i + 1 for i in range(1, batch.shape[0]) if off_grid_share(batch[i]) > OFF_GRID_SHARE
            ]
        position += batch.shape[0]
    return rescaled


def photo_warnings(images: list[torch.Tensor]) -> list[str]:
    """What the node says on its UI about the photos as wired (empty: nothing to say)."""
    rescaled = rescaled_photos(images)
    if not rescaled:
        return []
    which = ", ".join(str(i) for i in rescaled)
    return [
        f"photo {which} of the batch was rescaled to the first photo's size before this node (e.g. by Image "
        "Batch), which crops it to that aspect and can cut off a subject near its edge: wire the photos "
        "through Photo List so each keeps its own size"
    ]


class PhotoList(io.ComfyNode):
    """Up to eight images → one list: each keeps its size (no batching, so no rescaling)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageAlchemy_PhotoList",
            display_name="Photo List",
            category="Image Alchemy/training",
            **search_aliases("photo list", "image list", "training images", "dataset"),
            description="Collects the subject photos into a list, each at its own size and aspect, for Train "
            "Subject LoRA (Image Batch would rescale and crop them all to the first one's size). A node "
            "between this one and the trainer (e.g. a segmenter for the masks) runs once per photo.",
            inputs=[
                io.Image.Input(
                    f"image_{i}",
                    optional=i > 1,
                    tooltip="A subject photo (from Load Image); a batch adds each of its images."
                    if i == 1
                    else "Another subject photo (optional).",
                )
                for i in range(1, PHOTO_INPUTS + 1)
            ],
            outputs=[
                io.Image.Output(
                    display_name="photos",
                    is_output_list=True,
                    tooltip="The photos as a list, in input order, each at its own size.",
                )
            ],
        )

    @classmethod
    def execute(cls, **images) -> io.NodeOutput:
        wired = [images[f"image_{i}"] for i in range(1, PHOTO_INPUTS + 1) if images.get(f"image_{i}") is not None]
        return io.NodeOutput([photo[None] for photo in photo_list(wired)])


NODES = [PhotoList]
