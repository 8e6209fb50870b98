"""The README's node reference and the per-node help pages (web/docs) are generated from /object_info
(scripts/node_reference.py) and must be current.

It is rendered from a server with empty model folders, as the generator does: some defaults are the first or
last file found, so the shared test server (whose folders other tests fill) would render differently.
"""

import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import node_reference  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

pytestmark = pytest.mark.server  # starts its own server (empty model folders)

GENERATED_FROM = "0.33.0"  # `make generate` renders from the default ComfyUI; older ones lack some types


def _comfyui_version(comfy_dir: Path) -> str:
    text = (comfy_dir / "comfyui_version.py").read_text()
    return text.split("__version__ = ", 1)[1].split()[0].strip("\"'")


def test_readme_node_reference_and_help_pages_match_the_server(tmp_path, comfy_dir):
    server = ComfyServer(comfy_dir, tmp_path, {"comfyui-image-alchemy": ROOT}).start()
    try:
        info = server.object_info()
        # The frontend asks for /extensions/<pack folder>/docs/<node_id>.md (then a per-locale page first).
        served = {
            name: requests.get(f"{server.url}/extensions/comfyui-image-alchemy/docs/{name}.md", timeout=10)
            for name in node_reference.ours(info)
        }
    finally:
        server.stop()
    on_disk = {p.name: p.read_text() for p in node_reference.DOCS.glob("*.md")}
    if _comfyui_version(comfy_dir) == GENERATED_FROM:
        body = node_reference.render(info)
        readme = (ROOT / "README.md").read_text()
        assert readme == node_reference.replace_section(readme, body), (
            "README node reference is stale: run .venv/bin/python scripts/node_reference.py"
        )
        pages = node_reference.render_docs(info)
        assert on_disk == pages, "web/docs help pages are stale: run .venv/bin/python scripts/node_reference.py"
    else:  # an older ComfyUI (e.g. no BOUNDING_BOX output): the same nodes, their pages served as generated
        pages = on_disk
        assert set(pages) == {f"{name}.md" for name in node_reference.ours(info)}
    assert len(pages) == len(served) > 0
    for name, response in served.items():
        assert response.status_code == 200, f"{name}: help page not served"
        assert response.content.decode("utf-8") == pages[f"{name}.md"]
