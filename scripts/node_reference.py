"""Writes the README's node list, the node reference (docs/nodes.md) and the frontend's per-node help pages
(web/docs/<node_id>.md) from the server's own /object_info, so none can drift from the code.

Run: `.venv/bin/python scripts/node_reference.py` (starts the pack's ComfyUI, rewrites README.md between the
node-list markers, docs/nodes.md and web/docs). tests/test_readme.py fails when any is out of date.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- node-list:start -->", "<!-- node-list:end -->"
PACK_MODULE_SUFFIX = "comfyui-image-alchemy"
DOCS = ROOT / "web" / "docs"
REFERENCE = ROOT / "docs" / "nodes.md"
REFERENCE_HEAD = """# Node reference

Back to the [README](../README.md). Generated from the server's `/object_info` by `scripts/node_reference.py`
(a test fails when it is stale); each node's help page in the frontend (**?**) is the same text.

"""


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _default(options: dict) -> str:
    # Only declared defaults: a file list's first entry depends on what is in the user's folders.
    return f"`{options['default']}`" if "default" in options else ""


def ours(object_info: dict) -> dict:
    """The pack's nodes, in reference order (category, then display name)."""
    nodes = {
        name: spec for name, spec in object_info.items() if spec.get("python_module", "").endswith(PACK_MODULE_SUFFIX)
    }
    return dict(sorted(nodes.items(), key=lambda item: (item[1]["category"], item[1]["display_name"])))


def node_section(name: str, spec: dict, heading: str = "###") -> list[str]:
    """One node's reference: title, category and description, an inputs table and an outputs table."""
    lines = [
        f"{heading} {spec['display_name']} (`{name}`)",
        "",
        f"*{spec['category']}* — {spec['description']}",
        "",
        "| input | type | default | what it does |",
        "|---|---|---|---|",
    ]
    for section in ("required", "optional"):
        for input_name, input_spec in spec["input"].get(section, {}).items():
            kind = input_spec[0]
            options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            kind_name = "COMBO" if isinstance(kind, list) else kind
            optional = " (optional)" if section == "optional" else ""
            lines.append(
                f"| `{input_name}`{optional} | {kind_name} | {_cell(_default(options))} | "
                f"{_cell(options.get('tooltip', ''))} |"
            )
    lines += ["", "| output | type | what it is |", "|---|---|---|"]
    tooltips = spec.get("output_tooltips") or [""] * len(spec["output"])
    for out_name, kind, tip in zip(spec["output_name"], spec["output"], tooltips):
        lines.append(f"| `{out_name}` | {kind if isinstance(kind, str) else 'COMBO'} | {_cell(tip or '')} |")
    return lines + [""]


def render(object_info: dict) -> str:
    """docs/nodes.md: every node's section, in reference order."""
    lines = []
    for name, spec in ours(object_info).items():
        lines += node_section(name, spec, heading="##")
    return REFERENCE_HEAD + "\n".join(lines).rstrip() + "\n"


def render_list(object_info: dict) -> str:
    """The README's node list: one line per node, linking its help page."""
    lines = []
    for name, spec in ours(object_info).items():
        summary = re.split(r"\. |: | \(", spec["description"])[0].rstrip(".")  # its first clause
        lines.append(f"- [{spec['display_name']}](web/docs/{name}.md) (`{name}`) — {summary}.")
    return "\n".join(lines) + "\n"


def render_docs(object_info: dict) -> dict[str, str]:
    """The frontend's per-node help pages: file name under web/docs → markdown. ComfyUI's frontend (1.48.7, in
    0.33.0) fetches /extensions/<pack folder>/docs/<node_id>.md, served from WEB_DIRECTORY (web/)."""
    pages = {}
    for name, spec in ours(object_info).items():
        pages[f"{name}.md"] = "\n".join(node_section(name, spec, heading="#")).rstrip() + "\n"
    return pages


def write_docs(pages: dict[str, str]) -> None:
    """Replaces web/docs with exactly these pages (a removed node's page goes too)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    for stale in DOCS.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    for file_name, text in pages.items():
        tmp = DOCS / f".{file_name}.tmp"
        tmp.write_text(text)
        tmp.replace(DOCS / file_name)


def replace_section(readme: str, body: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main() -> None:
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from comfy_server import ComfyServer

    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(
            ROOT / ".cache" / "comfyui",
            Path(base),
            {"comfyui-image-alchemy": ROOT},
            python=str(ROOT / ".venv" / "bin" / "python"),
        ).start()
        try:
            info = server.object_info()
        finally:
            server.stop()
    readme = ROOT / "README.md"
    readme.write_text(replace_section(readme.read_text(), render_list(info)))
    REFERENCE.write_text(render(info))
    pages = render_docs(info)
    write_docs(pages)
    print(f"README node list, docs/nodes.md and web/docs: {len(pages)} nodes")


if __name__ == "__main__":
    main()
