"""Builds example_workflows/*.json (UI format) and their .jpg previews with ComfyUI's own frontend.

Each workflow is declared in scripts/workflow_specs.py as nodes with grid positions, widget values and links;
this script starts the pack's ComfyUI, creates the nodes in the real frontend (so the saved JSON is exactly what
the frontend writes and reads), serializes the graph and screenshots it. Run: `.venv/bin/python
scripts/build_example_workflows.py` after changing a spec or a node's inputs. (Dev tool: not shipped.)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from browser import frontend  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
import workflow_specs  # noqa: E402

BUILD_JS = """
async (spec) => {
  const app = window.app, LG = window.LiteGraph;
  app.graph.clear();
  const made = {};
  for (const n of spec.nodes) {
    const node = LG.createNode(n.type);
    if (!node) throw new Error("unknown node type " + n.type);
    node.pos = [n.col * spec.colWidth, n.row * spec.rowHeight];
    if (n.title) node.title = n.title;
    app.graph.add(node);
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const w = (node.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(n.type + " has no widget " + name);
      w.value = value;
    }
    if (n.size) node.size = n.size;
    made[n.key] = node;
  }
  for (const n of spec.nodes) {
    for (const [input, [srcKey, slot]] of Object.entries(n.links || {})) {
      const dst = made[n.key], src = made[srcKey];
      const idx = dst.findInputSlot(input);
      if (idx < 0) throw new Error(n.type + " has no input " + input);
      if (!src.connect(slot, dst, idx)) throw new Error("could not link " + srcKey + "." + slot + " -> " + n.key + "." + input);
    }
  }
  // Through JSON so undefined fields are dropped, not saved as null (the frontend's schema rejects nulls).
  const graph = JSON.parse(JSON.stringify(app.graph.serialize()));
  // Saved view: the whole graph at a readable scale when a user opens the workflow.
  graph.extra = {...(graph.extra || {}), ds: {scale: spec.scale || 0.7, offset: [140, 200]}};
  await app.loadGraphData(graph);
  return graph;
}
"""

SHOW_JS = """([scale, offset]) => {
  const c = window.app.canvas;
  c.ds.scale = scale; c.ds.offset = offset;
  c.setDirty(true, true); c.draw(true, true);
}"""


def main() -> None:
    out_dir = ROOT / "example_workflows"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(ROOT / ".cache" / "comfyui", Path(base), {"comfyui-image-alchemy": ROOT},
                             python=str(ROOT / ".venv" / "bin" / "python")).start()
        try:
            for setting, value in (("Comfy.Minimap.Visible", False), ("Comfy.TutorialCompleted", True)):
                requests.post(f"{server.url}/settings/{setting}", json=value, timeout=10)
            with frontend(server, width=2700, height=1300) as ui:
                for spec in workflow_specs.WORKFLOWS:
                    graph = ui.page.evaluate(BUILD_JS, spec)
                    (out_dir / f"{spec['name']}.json").write_text(json.dumps(graph, indent=2) + "\n")
                    ui.page.wait_for_timeout(800)  # the frontend applies the saved view asynchronously
                    ui.page.evaluate(SHOW_JS, [spec.get("scale", 0.7), [140, 200]])
                    ui.page.wait_for_timeout(300)
                    # The canvas only, without the frontend's menus and banners.
                    ui.page.screenshot(path=str(out_dir / f"{spec['name']}.jpg"), type="jpeg", quality=80,
                                       clip={"x": 60, "y": 70, "width": 2640,
                                             "height": spec.get("shot_height", 900)})
                    print("wrote", spec["name"])
        finally:
            server.stop()


if __name__ == "__main__":
    main()
