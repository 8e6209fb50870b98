"""The pack in ComfyUI's real frontend (headless Chromium): every example workflow loads with no missing node
type and no broken link, opens laid out (a group per stage, no node over another, the whole graph in the saved view
of a 1920×1080 window), our web extension raises no error, and the two-stage workflow runs from the Run button."""

import os
import time
from pathlib import Path

import pytest
import requests
import workflows
from browser import WORKFLOW_VIEW, frontend
from tiny_models import detectors as tiny_detectors
from tiny_models.lora import write_kohya_lora

pytestmark = pytest.mark.browser  # make test-browser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = sorted((ROOT / "example_workflows").glob("*.json"))
# Workflows that use core nodes of a newer ComfyUI than the one under test are left out (ComfyUI 0.3.75 has no
# SAM3_Detect); test_workflows_that_need_a_newer_comfyui_say_so checks they are marked.
WORKFLOW_FILES = workflows.for_comfyui(
    WORKFLOW_FILES, os.environ.get("IMAGE_ALCHEMY_COMFYUI", ROOT / ".cache" / "comfyui")
)
DINO, SAM, LORA = "browser-dino", "browser_sam.pth", "browser_subject.safetensors"
SCREENSHOT_DIR = ROOT / "tests" / "artifacts"

# Swaps the checkpoint loader for the tiny test loader (same three outputs) and shrinks the run, as a user would
# by editing widgets.
TINY_GRAPH_JS = """
([dino, sam, lora]) => {
  const app = window.app, LG = window.LiteGraph, graph = app.graph;
  for (const old of graph.nodes.filter(n => n.type === "CheckpointLoaderSimple")) {
    const tiny = LG.createNode("ImageAlchemyTest_TinySDXLLoader");
    tiny.pos = [...old.pos];
    graph.add(tiny);
    old.outputs.forEach((output, slot) => {
      for (const id of [...(output.links || [])]) {
        const link = graph.links instanceof Map ? graph.links.get(id) : graph.links[id];
        tiny.connect(slot, graph.getNodeById(link.target_id), link.target_slot);
      }
    });
    graph.remove(old);
  }
  const set = (node, name, value) => { const w = (node.widgets || []).find(w => w.name === name); if (w) w.value = value; };
  for (const node of graph.nodes) {
    if (node.type === "ImageAlchemy_GroundingDinoLoader") set(node, "model_name", dino);
    if (node.type === "ImageAlchemy_SAMLoader") set(node, "model_name", sam);
    if (node.type === "ImageAlchemy_GroundedSAMMask") { set(node, "box_threshold", 0); set(node, "text_threshold", 0);
                                                         set(node, "if_nothing_found", "whole image"); }
    if (node.type === "ImageAlchemy_LoRAImg2ImgInsert") set(node, "lora_name", lora);
    for (const name of ["width", "height", "resolution"]) {
      const w = (node.widgets || []).find(w => w.name === name);
      if (w && w.value > 64) w.value = 64;
    }
    const steps = (node.widgets || []).find(w => w.name === "steps");
    if (steps) steps.value = Math.min(steps.value, 2);
  }
  graph.setDirtyCanvas(true, true);
}
"""


@pytest.fixture(scope="module")
def ui(comfy, tiny_models):
    models = comfy.base_dir / "models"
    tiny_detectors.write_grounding_dino_hf(models / "grounding-dino" / DINO)
    tiny_detectors.write_sam(models / "sams" / SAM)
    write_kohya_lora(models / "loras" / LORA, tiny_models["unet"])
    with frontend(comfy, width=WORKFLOW_VIEW["width"], height=WORKFLOW_VIEW["height"]) as page:
        yield page


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflow_loads_without_missing_nodes_or_broken_links(comfy, ui, path):
    workflow = workflows.load(path)
    assert ui.missing_node_types(workflow) == []
    ui.load_workflow(workflow)
    assert ui.alerts() == [], "the frontend warned while loading the workflow"
    from_frontend = ui.graph_to_prompt()
    info = comfy.object_info()
    ours = workflows.ui_to_api(workflow, info)
    # The frontend's own conversion and ours agree node for node and link for link.
    assert set(from_frontend) == set(ours)
    for node_id, node in ours.items():
        assert from_frontend[node_id]["class_type"] == node["class_type"]
        spec = info[node["class_type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        # Frontend-only widgets (PreviewAny's text box) are sent too; the server ignores what it did not declare.
        frontend_inputs = {k: v for k, v in from_frontend[node_id]["inputs"].items() if k in declared}
        assert frontend_inputs == node["inputs"], node["class_type"]
    assert ui.our_errors() == []


# Which group each stage's key node sits in, by the start of the group's title.
STAGE_NODES = {
    "ImageAlchemy_TrainSubjectLoRA": "Learn",
    "KSampler": "Stage 1",
    "ImageAlchemy_LoRAImg2ImgInsert": "Stage 2",
}


def _overlap(a, b) -> bool:
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])


def _inside(inner, outer) -> bool:
    return (
        inner[0] >= outer[0]
        and inner[1] >= outer[1]
        and inner[0] + inner[2] <= outer[0] + outer[2]
        and inner[1] + inner[3] <= outer[1] + outer[3]
    )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflow_opens_laid_out_in_its_saved_view(ui, path):
    workflow = workflows.load(path)
    layout = ui.open_with_saved_view(workflow)
    saved = workflow["extra"]["ds"]
    assert (layout["scale"], layout["offset"]) == (saved["scale"], saved["offset"]), "saved view not applied"
    nodes, groups = layout["nodes"], layout["groups"]
    assert len(nodes) == len(workflow["nodes"])
    # The frontend's own node boxes: title bar, slots and selection outline.
    assert [
        (a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1 :] if _overlap(a["box"], b["box"])
    ] == [], "nodes drawn over each other"
    assert [
        (a["title"], b["title"]) for i, a in enumerate(groups) for b in groups[i + 1 :] if _overlap(a["box"], b["box"])
    ] == [], "groups drawn over each other"
    view = WORKFLOW_VIEW
    free = [
        view["left"],
        view["top"],
        view["width"] - view["left"] - view["right"],
        view["height"] - view["top"] - view["bottom"],
    ]
    assert [item["title"] for item in nodes + groups if not _inside(item["screen"], free)] == [], (
        f"outside the saved view of a {view['width']}×{view['height']} window, or under the frontend's menus"
    )
    minimap = [view["width"] - view["minimap"][0], view["height"] - view["minimap"][1], *view["minimap"]]
    assert [node["title"] for node in nodes if _overlap(node["screen"], minimap)] == [], "nodes under the minimap"
    for node in nodes:
        if node["type"] in workflows.UI_ONLY_TYPES:
            continue
        holders = [
            g["title"]
            for g in groups
            if _inside(
                node["box"], [g["box"][0], g["box"][1] + g["titleHeight"], g["box"][2], g["box"][3] - g["titleHeight"]]
            )
        ]
        assert len(holders) == 1, f"{node['title']} is in {len(holders)} groups' bodies, not one"
        if node["type"] in STAGE_NODES:
            assert holders[0].startswith(STAGE_NODES[node["type"]]), (node["title"], holders[0])


def test_two_stage_workflow_runs_from_the_run_button(comfy, ui):
    before = set(requests.get(comfy.url + "/history", timeout=10).json())
    ui.load_workflow(workflows.load(ROOT / "example_workflows" / "2_two_stage_generation.json"))
    # Older frontends (0.3.75's) open the missing-models dialog for the workflow's downloads (its properties.models;
    # the folders here hold tiny stand-ins under other names): closed as a user would, before the stand-ins go in.
    dialog = ui.page.locator(".p-dialog-mask")
    for _ in range(3):
        if not dialog.count():
            break
        ui.page.keyboard.press("Escape")
        ui.page.wait_for_timeout(300)
    assert not dialog.count(), "a dialog stays open over the canvas"
    ui.page.evaluate(TINY_GRAPH_JS, [DINO, SAM, LORA])
    ui.page.get_by_role("button", name="Run", exact=True).first.click()
    deadline, entry = time.monotonic() + 300, None
    while time.monotonic() < deadline and entry is None:
        history = requests.get(comfy.url + "/history", timeout=10).json()
        done = [v for k, v in history.items() if k not in before and v.get("status", {}).get("completed") is not None]
        entry = done[0] if done else None
        time.sleep(0.5)
    assert entry is not None, "the queued workflow did not finish"
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert any(img["filename"].startswith("final") for img in images)
    ui.page.wait_for_timeout(500)
    SCREENSHOT_DIR.mkdir(exist_ok=True)
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "two_stage_in_frontend.png"))
    # The nodes that show images after the run had room for them: none grew over another.
    nodes = ui.layout()["nodes"]
    assert [
        (a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1 :] if _overlap(a["box"], b["box"])
    ] == [], "nodes grew over each other when they showed the run's images"
    assert ui.our_errors() == []
