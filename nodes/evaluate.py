"""SubjectMetrics: score generated images against real subject photos (DINO, CLIP-I, CLIP-T, BRISQUE) in a graph."""

from __future__ import annotations

import logging
import math
import os

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..alchemy import backbones, layout, metrics, quality
from . import folders
from .checks import node_error
from .search import search_aliases

log = logging.getLogger(__name__)

NODE = "SubjectMetrics"
FOLDER = "eval_backbones"
NONE = "none"


def backbone_folders() -> dict[str, str]:
    """Name (path relative to its models folder) → folder, for every folder holding a config.json."""
    found = {}
    for base in folders.roots(FOLDER):
        if not os.path.isdir(base):
            continue
        for current, dirs, files in os.walk(base, followlinks=True):
            if "config.json" in files:
                found.setdefault(os.path.relpath(current, base).replace(os.sep, "/"), current)
                dirs.clear()  # a model folder's subfolders are its own business
            dirs.sort()
    return dict(sorted(found.items()))


def _is_clip(folder: str) -> bool:
    try:
        return backbones._model_type(folder) == "clip"
    except (OSError, ValueError):
        return False


def backbone_options() -> tuple[list[str], list[str]]:
    folders = backbone_folders()
    clip = [name for name, folder in folders.items() if _is_clip(folder)]
    return [NONE] + [name for name in folders if name not in clip], [NONE] + clip


def _resolve(name: str, kind: str):
    if name == NONE:
        return None
    folder = backbone_folders().get(name)
    if folder is None:
        raise ValueError(
            f"{NODE}: the {kind} backbone {name!r} is no longer in models/{FOLDER}; "
            "pick another one or refresh the page."
        )
    return folder


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _stages(stages: list[str]):
    """The progress bar's ``on_stage(name)`` (which also honours a cancel) and ``done()``, one step per stage."""
    pbar = comfy.utils.ProgressBar(len(stages))

    def on_stage(name):
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(stages.index(name))

    return on_stage, lambda: pbar.update_absolute(len(stages))


class SubjectMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        dino_options, clip_options = backbone_options()
        return io.Schema(
            node_id="ImageAlchemy_SubjectMetrics",
            **search_aliases("dino score", "clip score", "brisque", "evaluate subject", "dreambench"),
            display_name="Subject Metrics (DINO / CLIP / BRISQUE)",
            category="Image Alchemy/evaluation",
            description=(
                "Scores generated images against real photos of the subject with DreamBooth's metrics, as paper "
                "001 reports them: DINO and CLIP-I (mean cosine similarity of image embeddings to every reference; "
                "with masks, of the subject's box), CLIP-T (image vs prompt) and BRISQUE (no-reference quality, "
                "lower is better). Backbones are transformers folders under models/eval_backbones."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Generated images to score (a batch)."),
                io.Image.Input(
                    "reference_images",
                    tooltip="Real photos of the subject (a batch; sizes may differ from the generated images).",
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="",
                    tooltip="The prompt the images were generated with (CLIP-T compares each image with it).",
                ),
                io.Combo.Input(
                    "dino_model",
                    options=dino_options,
                    default=dino_options[-1],
                    tooltip="DINO ViT folder in models/eval_backbones (facebook/dino-vits16 for the "
                    "paper's numbers); none skips DINO.",
                ),
                io.Combo.Input(
                    "clip_model",
                    options=clip_options,
                    default=clip_options[-1],
                    tooltip="CLIP folder in models/eval_backbones (model, processor and tokenizer); "
                    "none skips CLIP-I and CLIP-T.",
                ),
                io.Boolean.Input("brisque", default=True, tooltip="Also compute BRISQUE (lower is better)."),
                io.Float.Input(
                    "mask_margin",
                    default=0.1,
                    min=0.0,
                    max=2.0,
                    step=0.01,
                    tooltip="With masks: the subject box grows by this fraction of its size on each "
                    "side before DINO / CLIP-I embed it.",
                ),
                io.String.Input(
                    "clip_t_prompt",
                    default="",
                    optional=True,
                    tooltip="Text for CLIP-T instead of the prompt, e.g. with the rare token replaced "
                    "by the class word (CLIP has no meaning for the token). Empty: the prompt.",
                ),
                io.Mask.Input(
                    "masks",
                    optional=True,
                    tooltip="Subject masks of the generated images (one, or one per image): DINO / CLIP-I "
                    "then compare the subject region, as the Image-Alchemy paper does.",
                ),
                io.Mask.Input(
                    "reference_masks",
                    optional=True,
                    tooltip="Subject masks of the reference images (one, or one per image).",
                ),
            ],
            outputs=[
                io.String.Output(
                    "table",
                    display_name="table",
                    tooltip="The scores as a text table: this prompt and the references' own "
                    "similarity (the ceiling), one column per metric.",
                ),
                io.Float.Output(
                    "dino", display_name="dino", tooltip="Mean DINO similarity to the references (NaN when skipped)."
                ),
                io.Float.Output(
                    "clip_i",
                    display_name="clip_i",
                    tooltip="Mean CLIP image similarity to the references (NaN when skipped).",
                ),
                io.Float.Output(
                    "clip_t", display_name="clip_t", tooltip="Mean CLIP image–prompt similarity (NaN when skipped)."
                ),
                io.Float.Output(
                    "brisque_score",
                    display_name="brisque_score",
                    tooltip="Mean BRISQUE of the images, lower is better (NaN when skipped).",
                ),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        images,
        reference_images,
        prompt,
        dino_model,
        clip_model,
        brisque,
        mask_margin,
        clip_t_prompt="",
        masks=None,
        reference_masks=None,
    ) -> io.NodeOutput:
        if dino_model == NONE and clip_model == NONE and not brisque:
            raise ValueError(f"{NODE}: nothing to compute: pick a DINO or CLIP backbone, or turn BRISQUE on.")
        if clip_model != NONE and not prompt.strip():
            raise ValueError(
                f"{NODE}: CLIP-T needs the prompt the images were generated with; type it in, "
                "or set clip_model to none."
            )
        device = comfy.model_management.get_torch_device()
        steps = ["load"] + [
            s for s, on in (("dino", dino_model != NONE), ("clip", clip_model != NONE), ("brisque", brisque)) if on
        ]
        on_stage, done = _stages(steps)
        dino = clip = None
        try:
            dino_folder, clip_folder = _resolve(dino_model, "DINO"), _resolve(clip_model, "CLIP")
            dino = backbones.DinoBackbone.load(dino_folder) if dino_folder else None
            clip = backbones.ClipBackbone.load(clip_folder) if clip_folder else None
            # IMAGE is B×H×W×C float; the pure code scores HWC uint8 pictures, quantized like saved PNGs.
            result = metrics.evaluate(
                metrics.to_uint8(images),
                [prompt.strip() or "generated images"] * images.shape[0],
                metrics.to_uint8(reference_images),
                dino=dino,
                clip=clip,
                quality=quality.brisque_scores if brisque else None,
                generated_masks=layout.mask_planes(masks),
                reference_masks=layout.mask_planes(reference_masks),
                margin=mask_margin,
                clip_t_prompts=[clip_t_prompt] * images.shape[0] if clip_t_prompt.strip() else None,
                device=device,
                on_stage=on_stage,
            )
        except (ValueError, FileNotFoundError) as e:
            raise node_error(NODE, e) from e
        finally:
            backbones.release(dino, clip)
            comfy.model_management.soft_empty_cache()
        done()
        # One prompt: its row is the overall row, so the table shows it once.
        table = metrics.format_table([r for r in result.summary if r.prompt != metrics.OVERALL])
        log.info("%s:\n%s", NODE, table)
        overall = result.overall()
        scores = (overall.dino, overall.clip_i, overall.clip_t, overall.brisque)
        return io.NodeOutput(table, *(_float(v) for v in scores), ui=ui.PreviewText(table))


NODES = [SubjectMetrics]
