"""Writes the README's node reference from the server's own /object_info, so it cannot drift from the code.

Run: `.venv/bin/python scripts/node_reference.py` (starts the pack's ComfyUI, rewrites README.md between the
node-reference markers). tests/test_readme.py fails when the README is out of date.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"
PACK_MODULE_SUFFIX = "comfyui-image-alchemy"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _default(options: dict) -> str:
    # Only declared defaults: a file list's first entry depends on what is in the user's folders.
    return f"`{options['default']}`" if "default" in options else ""


def render(object_info: dict) -> str:
    ours = {name: spec for name, spec in object_info.items()
            if spec.get("python_module", "").endswith(PACK_MODULE_SUFFIX)}
    lines = []
    for name, spec in sorted(ours.items(), key=lambda item: (item[1]["category"], item[1]["display_name"])):
        lines += [f"### {spec['display_name']} (`{name}`)", "", f"*{spec['category']}* — {spec['description']}", "",
                  "| input | type | default | what it does |", "|---|---|---|---|"]
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                kind = input_spec[0]
                options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
                kind_name = "COMBO" if isinstance(kind, list) else kind
                optional = " (optional)" if section == "optional" else ""
                lines.append(f"| `{input_name}`{optional} | {kind_name} | {_cell(_default(options))} | "
                             f"{_cell(options.get('tooltip', ''))} |")
        lines += ["", "| output | type | what it is |", "|---|---|---|"]
        tooltips = spec.get("output_tooltips") or [""] * len(spec["output"])
        for out_name, kind, tip in zip(spec["output_name"], spec["output"], tooltips):
            lines.append(f"| `{out_name}` | {kind if isinstance(kind, str) else 'COMBO'} | {_cell(tip or '')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def replace_section(readme: str, body: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_server import ComfyServer

    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(ROOT / ".cache" / "comfyui", Path(base), {"comfyui-image-alchemy": ROOT},
                             python=str(ROOT / ".venv" / "bin" / "python")).start()
        try:
            body = render(server.object_info())
        finally:
            server.stop()
    readme = ROOT / "README.md"
    readme.write_text(replace_section(readme.read_text(), body))
    print(f"README.md node reference: {body.count('### ')} nodes")


if __name__ == "__main__":
    main()
