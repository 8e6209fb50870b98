"""Input checks and error wording shared by the nodes: every message starts with the node's name, so a user
reading ComfyUI's error dialog knows which node to fix, and the same mistake reads the same on every node."""

from __future__ import annotations

import torch

CONVERT_HINT = "convert the image to RGB first (e.g. load it with Load Image)"


def node_error(node: str, message: str | Exception) -> ValueError:
    """A ValueError prefixed with the node's name: ``raise node_error(NODE, e) from e``."""
    return ValueError(f"{node}: {message}")


def first_line(error: Exception) -> str:
    """What went wrong, in one line: the error's first line, or its type when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_images(node: str, images: torch.Tensor, what: str = "images", allow_empty: bool = False) -> None:
    """IMAGE inputs: at least one image (unless ``allow_empty``: the node says so in its own words), RGB or RGBA."""
    if images.shape[0] == 0:
        if allow_empty:
            return
        raise node_error(node, "the image batch is empty: connect at least one image.")
    if images.shape[-1] not in (3, 4):
        raise node_error(node, f"expected RGB or RGBA {what}, got {images.shape[-1]} channels: {CONVERT_HINT}.")


def check_choice(node: str, name: str, value: str, choices) -> None:
    """A combo value sent by an API client that is not one of the node's options."""
    if value not in choices:
        raise node_error(node, f"unknown {name} {value!r}; choose one of {tuple(choices)}.")
