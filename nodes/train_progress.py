"""TrainSubjectLoRA's progress on the page: the events its chart reads, the trainer's live latent view as ComfyUI's
progress preview, and the previews decoded with the wired VAE."""

from __future__ import annotations

import torch

PROGRESS_EVENT = "image_alchemy.train_progress"


def rgb_factors(model) -> dict | None:
    """The model's latent→RGB preview factors (comfy.latent_formats), for the trainer's live view."""
    fmt = model.model.latent_format
    factors = getattr(fmt, "latent_rgb_factors", None)
    return None if factors is None else {"factors": factors, "bias": getattr(fmt, "latent_rgb_factors_bias", None)}


def live_view(preview: dict | None):
    """The trainer's latent→RGB preview as ComfyUI's progress preview (what KSampler sends)."""
    if not preview or "rgb" not in preview:
        return None
    import base64

    import numpy as np
    from comfy.cli_args import args
    from PIL import Image

    rgb = np.frombuffer(base64.b64decode(preview["rgb"]), np.uint8).reshape(preview["height"], preview["width"], 3)
    return "JPEG", Image.fromarray(rgb), args.preview_size


def preview_grid(model, vae, previews: list) -> torch.Tensor | None:
    """All previews decoded with the wired VAE: 1 × (rows·H) × (prompts·W) × 3, one row per preview step."""
    if not previews:
        return None
    rows = []
    for _step, latents in previews:
        images = vae.decode(model.model.process_latent_out(latents.float()))[..., :3].float().cpu()  # P×H×W×3
        rows.append(torch.cat(list(images), dim=1))
    return torch.cat(rows, dim=0)[None].clamp(0, 1)


def send(unique_id, payload: dict) -> None:
    from server import PromptServer

    instance = PromptServer.instance
    instance.send_sync(PROGRESS_EVENT, {"node": unique_id, **payload}, instance.client_id)
    if payload.get("phase") == "warning" and payload["text"]:  # ComfyUI's own text area on the node, too
        instance.send_progress_text(payload["text"], unique_id, instance.client_id)
