"""Builds example_workflows/*.json (UI format) and their .jpg previews with ComfyUI's own frontend.

Each workflow is declared in scripts/workflow_specs.py as nodes with widget values, links and a place (group,
column rank, order); this script starts the pack's ComfyUI, creates the nodes in the real frontend (so the saved JSON
is exactly what the frontend writes and reads), lays them out from their real sizes in groups with a saved view that
shows the whole graph in a 1920×1080 window (scripts/workflow_layout.js), serializes the graph and screenshots it.
It also writes the subgraph blueprints (subgraphs/*.json, ComfyUI 0.33's ready-made nodes in the node library) from
the built workflows with the frontend's own subgraph conversion (scripts/subgraph_blueprint.js).
Run: `.venv/bin/python scripts/build_example_workflows.py` after changing a spec or a node's inputs.
(Dev tool: not shipped.)
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import uuid
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
sys.path.insert(0, str(ROOT / "scripts"))

import workflow_specs  # noqa: E402
from browser import WORKFLOW_VIEW, frontend  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

BUILD_JS = (ROOT / "scripts" / "workflow_layout.js").read_text()
BLUEPRINT_JS = (ROOT / "scripts" / "subgraph_blueprint.js").read_text()

# Opens a saved workflow as a user does and waits until the frontend has applied its saved view.
OPEN_JS = """async (graph) => {
  await window.app.loadGraphData(graph);
  const want = graph.extra.ds, ds = window.app.canvas.ds;
  for (let i = 0; i < 100 && !(ds.scale === want.scale && ds.offset[0] === want.offset[0]); i++)
    await new Promise(r => setTimeout(r, 50));
  window.app.canvas.setDirty(true, true);
}"""


# Model folders the shipped widgets name files in. Newer frontends mark a node whose file is missing and show an
# error toast; placeholder files (empty models, grey photos) keep that out of the previews (nothing is loaded).
MODEL_FOLDERS = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "ImageAlchemy_GroundingDinoLoader": "grounding-dino",
    "ImageAlchemy_SAMLoader": "sams",
}


def write_placeholder_files(base: Path) -> None:
    for spec in workflow_specs.WORKFLOWS:
        for node in spec["nodes"]:
            if node["type"] == "LoadImage":
                (base / "input").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (128, 128, 128)).save(base / "input" / node["widgets"]["image"])
            models_dir = base / "models"
            for widget, value in node.get("widgets", {}).items():
                folder = MODEL_FOLDERS.get(widget) or (
                    MODEL_FOLDERS.get(node["type"]) if widget == "model_name" else None
                )
                if folder:
                    (models_dir / folder).mkdir(parents=True, exist_ok=True)
                    (models_dir / folder / value).touch()


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stable_uuids(text: str, name: str) -> str:
    """The frontend draws random ids for a new subgraph and its slots: the same ids, derived from the blueprint's
    name and their order of appearance, so that rebuilding an unchanged blueprint changes no byte."""
    ids: dict[str, str] = {}
    for found in UUID.findall(text):
        ids.setdefault(found, str(uuid.uuid5(uuid.NAMESPACE_URL, f"image-alchemy/{name}/{len(ids)}")))
    return UUID.sub(lambda m: ids[m.group(0)], text)


def main() -> None:
    out_dir = ROOT / "example_workflows"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        write_placeholder_files(Path(base))
        server = ComfyServer(
            ROOT / ".cache" / "comfyui",
            Path(base),
            {"comfyui-image-alchemy": ROOT},
            python=str(ROOT / ".venv" / "bin" / "python"),
        ).start()
        try:
            for setting, value in (
                ("Comfy.Minimap.Visible", False),
                ("Comfy.TutorialCompleted", True),
                ("Comfy.Graph.CanvasInfo", False),
                # Node text at the previews' zoom (frontends ≥ 1.4x / older ones).
                ("LiteGraph.Canvas.MinFontSizeForLOD", 1),
                ("LiteGraph.Canvas.LowQualityRenderingZoomThreshold", 0.1),
            ):
                requests.post(f"{server.url}/settings/{setting}", json=value, timeout=10)
            view = WORKFLOW_VIEW
            room = dict(
                showsImages=workflow_specs.SHOWS_IMAGES,
                previewHeight=workflow_specs.PREVIEW_HEIGHT,
                growsBelow=workflow_specs.GROWS_BELOW,
            )
            # At twice the pixels, as on a HiDPI screen, where the frontend still draws node text at the whole
            # pipeline's zoom (below about 0.57 it draws none at one pixel per point).
            with frontend(server, width=view["width"], height=view["height"], device_scale_factor=2) as ui:
                built = {}
                for spec in workflow_specs.WORKFLOWS:
                    graph = built[spec["name"]] = ui.page.evaluate(BUILD_JS, {**spec, **room, "view": view})
                    (out_dir / f"{spec['name']}.json").write_text(json.dumps(graph, indent=2) + "\n")
                    ui.page.evaluate(OPEN_JS, graph)
                    ui.page.wait_for_timeout(500)
                    # What a user sees on opening the workflow, without the side bar and the workflow tabs.
                    ui.page.screenshot(
                        path=str(out_dir / f"{spec['name']}.jpg"),
                        type="jpeg",
                        quality=80,
                        clip={
                            "x": view["left"],
                            "y": 80,
                            "width": view["width"] - view["left"],
                            "height": view["height"] - 80,
                        },
                    )
                    print("wrote", spec["name"])
                for blueprint in workflow_specs.BLUEPRINTS:
                    data = ui.page.evaluate(BLUEPRINT_JS, {**blueprint, "workflow": built[blueprint["workflow"]]})
                    (ROOT / "subgraphs").mkdir(exist_ok=True)
                    text = stable_uuids(json.dumps(data, indent=2) + "\n", blueprint["name"])
                    (ROOT / "subgraphs" / f"{blueprint['name']}.json").write_text(text)
                    print("wrote subgraph", blueprint["name"])
        finally:
            server.stop()


if __name__ == "__main__":
    main()
