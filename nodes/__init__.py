"""ComfyUI adapters: each node declares its schema and calls plain functions from the pack's pure modules."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import folders

NODES: list[type[io.ComfyNode]] = []


class ImageAlchemyExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        folders.register_model_folders()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
