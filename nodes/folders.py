"""Model folders this pack reads from: registered with ComfyUI's folder_paths, looked up, and the errors a loader
gives when a file is missing or does not load, in one place."""

from __future__ import annotations

import os
import pickle

import folder_paths
from safetensors import SafetensorError

from .checks import first_line, node_error

# grounding-dino and sams: the names other Grounded-SAM packs already use, so users can share the files.
# eval_backbones/<name>/: one transformers save_pretrained folder per SubjectMetrics backbone.
MODEL_FOLDERS = ("grounding-dino", "sams", "eval_backbones")

# What reading a damaged, foreign or pickled file raises (torch.load, safetensors, transformers' from_pretrained).
LOAD_ERRORS = (ValueError, RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError)


def register_model_folders() -> None:
    """Idempotent: called at import and again when ComfyUI asks for the node list."""
    for name in MODEL_FOLDERS:
        path = os.path.join(folder_paths.models_dir, name)
        known = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
        if path not in known:
            folder_paths.add_model_folder_path(name, path)


# ComfyUI 0.3.75 never calls ComfyExtension.on_load: the node modules' import is the first chance.
register_model_folders()


def roots(folder: str) -> list[str]:
    """The folder's paths (models/<folder> plus extra_model_paths.yaml entries); none when it is unknown."""
    try:
        return folder_paths.get_folder_paths(folder)
    except KeyError:
        return []


def resolve(folder: str, name: str, expected: str) -> str:
    """Full path of a file or folder ``name`` under one of ``folder``'s roots, or an error saying where to put it."""
    for root in roots(folder):
        root_real = os.path.realpath(root)
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root_real, path]) == root_real and os.path.exists(path):
            return path
    where = ", ".join(roots(folder)) or f"models/{folder}"
    raise FileNotFoundError(
        f"'{name}' was not found in the '{folder}' model folder ({where}). Put {expected} there and refresh the page."
    )


def missing_message(folder: str, name: str, choices: list[str], expected: str) -> bool | str:
    """validate_inputs' answer for a model name: True when it is listed or on disk, else where to put it."""
    if name in choices:
        return True
    try:
        resolve(folder, name, expected)
        return True
    except FileNotFoundError as e:
        return str(e)


def cannot_load(node: str, name: str, folder: str, expected: str, error: Exception) -> ValueError:
    """The error for a model file that exists but does not load, with what to do about it."""
    if isinstance(error, pickle.UnpicklingError):
        why = (
            "it holds pickled Python objects besides tensors, which are never loaded here because unpickling "
            "can run code"
        )
    else:
        why = first_line(error)
    return node_error(
        node,
        f"cannot load '{name}': {why}. The file is damaged, incomplete or not {expected}: "
        f"download it again into models/{folder} and refresh the page.",
    )


def load_model(node: str, folder: str, name: str, expected: str, load, sound_but_unsupported=()):
    """``load(path)`` on the file or folder ``name`` in ``folder``, its failures worded by :func:`cannot_load`;
    ``sound_but_unsupported`` errors (a sound file of another architecture: not "damaged") keep their message."""
    path = resolve(folder, name, expected)
    try:
        return load(path)
    except sound_but_unsupported as e:
        raise node_error(node, e) from e
    except LOAD_ERRORS as e:
        raise cannot_load(node, name, folder, expected, e) from e
