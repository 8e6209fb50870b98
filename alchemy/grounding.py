"""GroundingDINO through transformers (docs/DESIGN.md §5.2): load a HF folder or an original checkpoint, detect.

Two file layouts are read:

- a Hugging Face folder (``config.json``, ``model.safetensors``, processor/tokenizer files), e.g.
  IDEA-Research/grounding-dino-tiny, loaded with ``GroundingDinoForObjectDetection.from_pretrained``;
- the original checkpoint (``groundingdino_swint_ogc.pth``, ``groundingdino_swinb_cogcoor.pth``): a state dict
  under ``"model"`` with ``module.`` prefixes. It is converted on load to the Hugging Face hub layout with the
  key mapping of transformers' ``convert_grounding_dino_to_hf.py`` (no longer shipped in the wheel), then
  handed to ``from_pretrained`` so transformers applies its own renames for the installed version. The
  checkpoint has BERT's weights but not its tokenizer or config: they come from a ``bert-base-uncased`` folder
  beside the file when there is one, else from the copy of bert-base-uncased's config and tokenizer files shipped
  in ``alchemy/bert_base_uncased/`` (the text encoder of every released checkpoint), so the one ``.pth`` a
  download dialog fetches is all a user needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grounding_original import convert_original_state_dict, infer_config

BERT_FOLDER = "bert-base-uncased"
SHIPPED_BERT = Path(__file__).parent / "bert_base_uncased"
ORIGINAL_SUFFIXES = (".pth", ".pt")


@dataclass
class GroundingDino:
    """A loaded detector: the transformers model (CPU, eval) and the processor that prepares its inputs."""

    model: Any
    processor: Any
    source: str


def _bert_dir(checkpoint: Path) -> Path:
    """A ``bert-base-uncased`` folder beside the checkpoint (or one level up), else the shipped copy."""
    for candidate in (checkpoint.parent / BERT_FOLDER, checkpoint.parent.parent / BERT_FOLDER):
        if (candidate / "config.json").is_file():
            return candidate
    return SHIPPED_BERT


def _text_config(state: dict[str, torch.Tensor], bert: Path, checkpoint: Path) -> dict:
    """BERT's config for the checkpoint's text encoder. With the shipped files, the sizes come from the weights
    (the attention heads, which shapes do not show, stay bert-base's 12) and the vocabulary must be the shipped
    tokenizer's: a checkpoint trained with another text encoder needs its own folder beside it."""
    config = json.loads((bert / "config.json").read_text())
    if bert != SHIPPED_BERT:
        return config
    state = {k.removeprefix("module."): v for k, v in state.items()}
    embeddings = state.get("bert.embeddings.word_embeddings.weight")
    if embeddings is None or embeddings.shape[0] != config["vocab_size"]:
        rows = "no BERT weights" if embeddings is None else f"a {embeddings.shape[0]}-word vocabulary"
        raise ValueError(
            f"{checkpoint.name} has {rows}, not bert-base-uncased's {config['vocab_size']} words: put the BERT "
            f"tokenizer and config its text encoder was trained with in a '{BERT_FOLDER}' folder beside it "
            f"({checkpoint.parent / BERT_FOLDER}, with config.json and vocab.txt)."
        )
    layers = {int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")}
    config.update(
        hidden_size=embeddings.shape[1],
        num_hidden_layers=len(layers),
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
    )
    return config


def load_original(path: str | Path) -> GroundingDino:
    """Original checkpoint (.pth) → converted transformers model; tokenizer/config from ``bert-base-uncased``
    beside it or shipped."""
    from transformers import (
        AutoTokenizer,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    path = Path(path)
    bert = _bert_dir(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "backbone.0.patch_embed.proj.weight" not in {
        k.removeprefix("module.") for k in state
    }:
        raise ValueError(f"{path.name}: not an original GroundingDINO checkpoint (no Swin backbone weights found).")
    config = infer_config(state, _text_config(state, bert, path))
    converted = convert_original_state_dict(state)
    model, info = GroundingDinoForObjectDetection.from_pretrained(
        None, config=config, state_dict=converted, output_loading_info=True, local_files_only=True
    )
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if missing or info.get("unexpected_keys"):
        raise ValueError(
            f"{path.name}: converted weights do not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(info.get('unexpected_keys', []))[:5]}"
        )
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(),
        tokenizer=AutoTokenizer.from_pretrained(bert, local_files_only=True),
    )
    return GroundingDino(model.eval(), processor, str(path))


def load_hf_folder(path: str | Path) -> GroundingDino:
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(path, local_files_only=True)
    return GroundingDino(model.eval(), AutoProcessor.from_pretrained(path, local_files_only=True), str(path))


def load_grounding_dino(path: str | Path) -> GroundingDino:
    """Either layout, chosen by what is on disk; the model is returned on the CPU in eval mode."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face GroundingDINO folder: config.json is missing.")
        return load_hf_folder(path)
    if path.suffix.lower() in ORIGINAL_SUFFIXES:
        return load_original(path)
    raise ValueError(f"{path.name}: expected a Hugging Face folder or an original .pth checkpoint.")


def phrases(prompt: str) -> list[str]:
    """The phrases of a prompt, in order: "dog . cat" → ["dog", "cat"] (separated by periods, blanks dropped)."""
    return [p for p in (part.strip() for part in prompt.split(".")) if p]


def caption(prompt: str) -> str:
    """GroundingDINO's caption format: lower case, phrases separated by ' . ', ending with a period."""
    text = prompt.lower().strip()
    return text if text.endswith(".") else text + "."


@torch.no_grad()
def detect(
    detector: GroundingDino,
    image: np.ndarray,
    prompt: str,
    box_threshold: float,
    text_threshold: float,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Boxes for ``prompt`` in one H×W×3 uint8 RGB image.

    Returns ``boxes`` (N×4 float, x0 y0 x1 y1 in pixels, clamped to the image), ``scores`` (N, best first) and
    ``labels`` (the phrase each box matched). The model must already be on ``device``.
    """
    height, width = image.shape[:2]
    inputs = detector.processor(images=image, text=caption(prompt), return_tensors="pt").to(device)
    outputs = detector.model(**inputs)
    result = detector.processor.post_process_grounded_object_detection(
        outputs,
        inputs["input_ids"],
        threshold=box_threshold,
        text_threshold=text_threshold,
        target_sizes=[(height, width)],
    )[0]
    boxes = result["boxes"].float().cpu()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    scores = result["scores"].float().cpu()
    order = torch.argsort(scores, descending=True)
    labels = result["text_labels"] if "text_labels" in result else result["labels"]
    return {"boxes": boxes[order], "scores": scores[order], "labels": [labels[i] for i in order.tolist()]}
