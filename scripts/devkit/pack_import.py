"""The repo imported as the package ``image_alchemy``, the way ComfyUI loads a custom-node folder.

For tests, bench/ and scripts: the repo root itself never goes on sys.path, because ComfyUI has a top-level
module called ``nodes`` that the pack's own ``nodes/`` would shadow.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "image_alchemy"
# The tiny-model pack (never shipped): its folder and the custom_nodes name servers install it under.
TINY_PACK = Path(__file__).resolve().parent / "tiny_pack"
TINY_PACK_NAME = "image_alchemy_test_fixtures"


def import_pack():
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def in_process(comfy_dir, gpu: bool = False):
    """ComfyUI importable in this process (appended to sys.path; on the CPU unless ``gpu``) and the pack imported
    as a package: how the benches run nodes without a server."""
    from tiny_models import factory

    if str(comfy_dir) not in sys.path:
        sys.path.append(str(comfy_dir))
    factory.use_comfyui(comfy_dir)
    if not gpu:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    return import_pack()
