"""The README's node reference is generated from /object_info (scripts/node_reference.py) and must be current.

It is rendered from a server with empty model folders, as the generator does: some defaults are the first or
last file found, so the shared test server (whose folders other tests fill) would render differently.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import node_reference  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402


def test_readme_node_reference_matches_the_server(tmp_path, comfy_dir):
    server = ComfyServer(comfy_dir, tmp_path, {"comfyui-image-alchemy": ROOT}).start()
    try:
        body = node_reference.render(server.object_info())
    finally:
        server.stop()
    readme = (ROOT / "README.md").read_text()
    assert readme == node_reference.replace_section(readme, body), \
        "README node reference is stale: run .venv/bin/python scripts/node_reference.py"
