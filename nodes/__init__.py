"""ComfyUI adapters: each node declares its schema and calls plain functions from the pack's pure modules.

Each module below owns its nodes and exports them as ``NODES``; this file only collects them.
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import blur, evaluate, folders, insert, segment, token_picker, train

NODE_MODULES = (token_picker, train, segment, blur, insert, evaluate)


class ImageAlchemyExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls ComfyExtension.on_load, so the folders are registered here (idempotent).
        folders.register_model_folders()
        return [node for module in NODE_MODULES for node in module.NODES]
