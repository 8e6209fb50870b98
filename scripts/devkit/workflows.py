"""UI-format workflows (what ComfyUI's frontend saves and example_workflows/ ship) → API-format prompts.

The conversion mirrors the frontend's graphToPrompt: linked inputs become [node_id, slot], widget inputs take the
next value of ``widgets_values`` in the node's input order, and an INT with "control after generate" carries one
extra widget value that is not an input. Note nodes are UI-only and dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

UI_ONLY_TYPES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MUTED, BYPASSED = 2, 4


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def requires_comfyui(path: str | Path) -> tuple[int, ...]:
    """The ComfyUI version a shipped workflow needs (its extra.image_alchemy.requires_comfyui; () when any)."""
    wanted = load(path).get("extra", {}).get("image_alchemy", {}).get("requires_comfyui")
    return _version(wanted) if wanted else ()


def comfyui_version(comfy_dir: str | Path) -> tuple[int, ...]:
    text = (Path(comfy_dir) / "comfyui_version.py").read_text()
    return _version(re.search(r"__version__\s*=\s*[\"']([^\"']+)", text).group(1))


def for_comfyui(paths, comfy_dir) -> list[Path]:
    """The workflows among ``paths`` that the ComfyUI in ``comfy_dir`` has every core node for."""
    have = comfyui_version(comfy_dir)
    return [Path(p) for p in paths if requires_comfyui(p) <= have]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        node_type = node["type"]
        if node_type in UI_ONLY_TYPES or node.get("mode") in (MUTED, BYPASSED):
            continue
        if node_type not in object_info:
            raise KeyError(f"workflow node {node['id']} has type {node_type!r}, which the server does not know")
        spec = object_info[node_type]["input"]
        linked = {slot["name"]: slot.get("link") for slot in node.get("inputs", [])}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for section in ("required", "optional"):
            for name, input_spec in spec.get(section, {}).items():
                link_id = linked.get(name)
                if link_id is not None:
                    origin = links[link_id]
                    inputs[name] = [str(origin[1]), origin[2]]
                    if _is_widget(input_spec) and values:
                        values.pop(0)  # a widget converted to an input keeps its slot in widgets_values
                        if _has_control_widget(name, input_spec) and values:
                            values.pop(0)
                elif _is_widget(input_spec):
                    if not values:
                        raise ValueError(f"node {node['id']} ({node_type}) has no widget value for {name!r}")
                    inputs[name] = values.pop(0)
                    if _has_control_widget(name, input_spec) and values:
                        values.pop(0)
        prompt[str(node["id"])] = {"class_type": node_type, "inputs": inputs}
    return prompt


def swap_node_type(prompt: dict, old: str, new: str, keep_inputs: bool = False) -> int:
    """Replaces every node of type ``old`` by ``new`` (same output slots); returns how many were swapped."""
    count = 0
    for node in prompt.values():
        if node["class_type"] == old:
            node["class_type"] = new
            if not keep_inputs:
                node["inputs"] = {}
            count += 1
    return count


# What a shipped workflow's real model files become when it runs on the tiny test models.
TINY_LOADER = "ImageAlchemyTest_TinySDXLLoader"
LORA_USERS = ("ImageAlchemy_LoRAImg2ImgInsert", "LoraLoader")  # nodes whose lora_name picks an existing file


def adapt_for_tiny_models(
    prompt: dict, *, dino: str, sam: str, lora: str | None = None, size: int = 64, steps: int = 2
) -> dict:
    """Swaps real checkpoints for the tiny test models and shrinks sizes and steps to what a CPU runs in seconds.

    Links stay as they are: the tiny loader has the same outputs (MODEL, CLIP, VAE) as CheckpointLoaderSimple.
    Random tiny detectors score every box near 0.5 at best, so the box threshold drops to 0.
    """
    swap_node_type(prompt, "CheckpointLoaderSimple", TINY_LOADER)
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "ImageAlchemy_GroundingDinoLoader":
            inputs["model_name"] = dino
        elif kind == "ImageAlchemy_SAMLoader":
            inputs["model_name"] = sam
        elif kind == "ImageAlchemy_RareTokenPicker":  # 21 words × 8 seeds at the defaults: a few suffice here
            inputs.update(
                vocabulary_scan=min(inputs["vocabulary_scan"], 2),
                seeds_per_candidate=min(inputs["seeds_per_candidate"], 2),
            )
        elif kind == "ImageAlchemy_GroundedSAMMask":
            inputs.update(box_threshold=0.0, text_threshold=0.0, if_nothing_found="whole image")
        elif kind in LORA_USERS and lora is not None and not isinstance(inputs.get("lora_name"), list):
            inputs["lora_name"] = lora
        for key in ("width", "height", "resolution"):
            if isinstance(inputs.get(key), int) and inputs[key] > size:
                inputs[key] = size
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], steps)
    return prompt
