"""The README's node reference is generated from /object_info (scripts/node_reference.py) and must be current."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import node_reference  # noqa: E402


def test_readme_node_reference_matches_the_server(comfy):
    readme = (ROOT / "README.md").read_text()
    expected = node_reference.replace_section(readme, node_reference.render(comfy.object_info()))
    assert readme == expected, "README node reference is stale: run .venv/bin/python scripts/node_reference.py"
