"""Image Alchemy: put a specific person, pet or object into any generated scene, from 4–5 photos.

ComfyUI loads this folder as a package. Nothing ComfyUI-specific is imported at package import time, so the
pure modules (and the trainer) can be imported and tested without a running ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import ImageAlchemyExtension

    return ImageAlchemyExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
