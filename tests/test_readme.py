"""The README's node list, the node reference (docs/nodes.md) and the per-node help pages (web/docs) are generated
from /object_info (scripts/node_reference.py) and must be current; the README stays a short guide whose links
(and those of docs/*.md and CONTRIBUTING.md) all resolve.

It is rendered from a server with empty model folders, as the generator does: some defaults are the first or
last file found, so the shared test server (whose folders other tests fill) would render differently.
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import node_reference  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

README_MAX_LINES = 300
GUIDES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), outside code spans; the target up to the first space or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")

GENERATED_FROM = "0.33.0"  # `make generate` renders from the default ComfyUI; older ones lack some types


def _comfyui_version(comfy_dir: Path) -> str:
    text = (comfy_dir / "comfyui_version.py").read_text()
    return text.split("__version__ = ", 1)[1].split()[0].strip("\"'")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def test_readme_is_a_short_guide_whose_first_picture_is_a_result():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    first_picture = re.search(r"!\[[^\]]*\]\(([^)]+)\)", readme).group(1)
    # A result (the stage-2 picture or the demo's summary), not a graph screenshot from example_workflows/.
    assert first_picture.startswith("docs/") and not first_picture.startswith("example_workflows/"), first_picture
    assert "make demo" in readme.split("## ", 3)[2] or "make demo" in readme[: readme.index("## Install")]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(guide):
    broken = []
    for target in _links(guide):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        path = (guide.parent / unquote(path_part)).resolve() if path_part else guide
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in _anchors(path):
            broken.append(f"{target}: no heading '#{fragment}' in {path.relative_to(ROOT)}")
    assert not broken, f"{guide.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.server  # starts its own server (empty model folders)
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
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"\(web/docs/(\w+)\.md\) \(`(\w+)`\)", readme.split(node_reference.START, 1)[1])
    assert [page for page, _ in listed] == [name for _, name in listed] == list(node_reference.ours(info)), (
        "README node list differs from /object_info: run .venv/bin/python scripts/node_reference.py"
    )
    if _comfyui_version(comfy_dir) == GENERATED_FROM:
        # What users type in the node search ("insert subject", "train lora", ...): 0.33's Schema carries them.
        assert all(spec.get("search_aliases") for spec in node_reference.ours(info).values())
        assert "insert subject" in info["ImageAlchemy_LoRAImg2ImgInsert"]["search_aliases"]
        assert readme == node_reference.replace_section(readme, node_reference.render_list(info)), (
            "README node list is stale: run .venv/bin/python scripts/node_reference.py"
        )
        assert node_reference.REFERENCE.read_text() == node_reference.render(info), (
            "docs/nodes.md is stale: run .venv/bin/python scripts/node_reference.py"
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
