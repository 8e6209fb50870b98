"""GroundingDinoLoader and SamLoader: the detector and the segmenter for GroundedSAMMask, from their model folders
(paper 001 §3.3; docs/DESIGN.md §4.4, §5.2), over ``alchemy.grounding`` and ``alchemy.sam``.

Both are one shape: a combo of what the folder holds, ``validate_inputs`` saying where a missing file goes, and
``execute`` loading it through ``folders.load_model`` (CPU, eval mode) with its errors worded there.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..alchemy import grounding
from ..alchemy import sam as sam_ops
from . import folders
from .checks import node_error
from .search import search_aliases

GROUNDING_FOLDER, SAM_FOLDER = "grounding-dino", "sams"
# Pack-specific type names: other packs' GROUNDING_DINO_MODEL objects are groundingdino-py models, not ours.
GroundingDinoModel = io.Custom("IMAGE_ALCHEMY_GROUNDING_DINO")
SamModel = io.Custom("IMAGE_ALCHEMY_SAM")

GROUNDING_EXPECTED = (
    "an original GroundingDINO checkpoint such as groundingdino_swint_ogc.pth or a Hugging Face "
    "GroundingDINO folder (e.g. grounding-dino-tiny/ with config.json and model.safetensors)"
)
SAM_EXPECTED = (
    "a Segment Anything checkpoint such as sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth or "
    "sam_vit_b_01ec64.pth (SAM-HQ and MobileSAM files are not supported)"
)


def grounding_dino_choices() -> list[str]:
    """Hugging Face folders (holding config.json) and original .pth checkpoints under models/grounding-dino."""
    found = set()
    for root in folders.roots(GROUNDING_FOLDER):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            rel = os.path.relpath(dirpath, root)
            if os.path.basename(dirpath) == grounding.BERT_FOLDER:
                dirnames.clear()  # the tokenizer beside an original checkpoint, not a detector
                continue
            if rel != "." and "config.json" in filenames:
                found.add(rel.replace(os.sep, "/"))
                dirnames.clear()
                continue
            found.update(
                os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                for f in filenames
                if f.lower().endswith(grounding.ORIGINAL_SUFFIXES)
            )
    return sorted(found)


def sam_choices() -> list[str]:
    """SAM files this loader can build: SAM-HQ and MobileSAM files (named as released) are left out."""
    if not folders.roots(SAM_FOLDER):
        return []
    return [
        f
        for f in folder_paths.get_filename_list(SAM_FOLDER)
        if f.lower().endswith(sam_ops.SAM_SUFFIXES) and sam_ops.unsupported_by_name(os.path.basename(f)) is None
    ]


def loader_schema(node_id: str, display_name: str, description: str, choices: list[str], tooltip: str, output, aliases):
    return io.Schema(
        node_id=node_id,
        **search_aliases(*aliases),
        display_name=display_name,
        category="Image Alchemy/loaders",
        description=description,
        inputs=[io.Combo.Input("model_name", options=choices, tooltip=tooltip)],
        outputs=[output],
    )


class GroundingDinoLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "ImageAlchemy_GroundingDinoLoader",
            "GroundingDINO Loader",
            "Loads a GroundingDINO text-prompted box detector from models/grounding-dino: a Hugging "
            "Face folder, or an original IDEA-Research .pth converted on load (its BERT tokenizer and config "
            "are bert-base-uncased's, shipped with the pack; a bert-base-uncased folder beside the file wins).",
            grounding_dino_choices(),
            "Folder or .pth file under models/grounding-dino.",
            GroundingDinoModel.Output(
                display_name="grounding_dino", tooltip="The detector (kept on the CPU until a node uses it)."
            ),
            ("grounding dino", "groundingdino loader", "grounded sam"),
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return folders.missing_message(GROUNDING_FOLDER, model_name, grounding_dino_choices(), GROUNDING_EXPECTED)

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        return io.NodeOutput(
            folders.load_model(
                "GroundingDinoLoader", GROUNDING_FOLDER, model_name, GROUNDING_EXPECTED, grounding.load_grounding_dino
            )
        )


class SamLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "ImageAlchemy_SAMLoader",
            "SAM Loader (Segment Anything)",
            "Loads a Segment Anything model (ViT-B, ViT-L or ViT-H, read from the weights) from "
            "models/sams. Weights are loaded as tensors only (no pickled code). SAM-HQ and MobileSAM "
            "files are not listed: their architectures are not built by segment-anything.",
            sam_choices(),
            "SAM checkpoint under models/sams.",
            SamModel.Output(display_name="sam", tooltip="The SAM model (kept on the CPU until a node uses it)."),
            ("segment anything", "sam model", "grounded sam"),
        )

    @classmethod
    def validate_inputs(cls, model_name):
        kind = sam_ops.unsupported_by_name(os.path.basename(model_name))
        if kind is not None:
            return str(node_error("SAMLoader", sam_ops.unsupported_message(model_name, kind)))
        return folders.missing_message(SAM_FOLDER, model_name, sam_choices(), SAM_EXPECTED)

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        return io.NodeOutput(
            folders.load_model(
                "SAMLoader", SAM_FOLDER, model_name, SAM_EXPECTED, sam_ops.load_sam, sam_ops.UnsupportedSam
            )
        )


NODES = [GroundingDinoLoader, SamLoader]
