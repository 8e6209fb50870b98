"""A user's first hour in ComfyUI 0.33's own frontend (headless Chromium), on a server whose model folders start empty:

- each shipped workflow opens with the missing-models panel listing every model file it names, the downloadable
  ones with their official URL and folder (the workflows' properties.models), the others said to be unknown;
- the same files, placed in those folders by name (tiny stand-ins with the real names), clear the panel and make
  the workflows run;
- the pack's subgraph blueprint "Insert Subject (Image Alchemy)" is in the node library, and a graph using it, as
  the library adds it, gives the same final image, pixel for pixel, as workflow 2's nodes wired by hand.

The server runs with --cache-none, so every run computes every node (no result is reused from an earlier prompt).
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import workflows
from browser import frontend
from comfy_server import ComfyServer
from pack_import import TINY_PACK, TINY_PACK_NAME
from tiny_models import detectors as tiny_detectors
from tiny_models.lora import write_kohya_lora

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import workflow_specs  # noqa: E402

pytestmark = pytest.mark.browser

WORKFLOW_FILES = sorted((ROOT / "example_workflows").glob("*.json"))
BLUEPRINT = "Insert Subject (Image Alchemy)"
BLUEPRINT_FILE = ROOT / "subgraphs" / f"{BLUEPRINT}.json"
# What the frontend counts as a model file name (its isModelFileName).
MODEL_FILE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|sft|onnx|gguf)$", re.IGNORECASE)
# The frontend's pinia stores: the missing-models panel's and the subgraph blueprints' (node library).
STORE = "document.getElementById('vue-app').__vue_app__.config.globalProperties.$pinia._s.get"
NO_CHECKPOINT_STAND_IN = "ComfyUI's checkpoint loader only accepts SDXL's exact sizes: the tiny loader stands in"


def _needs_comfyui_0_33(comfy_dir):
    if workflows.comfyui_version(comfy_dir) < (0, 33):
        pytest.skip("the missing-models panel and subgraph blueprints are ComfyUI 0.33's frontend")


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory, comfy_dir, tiny_models):
    _needs_comfyui_0_33(comfy_dir)
    base = tmp_path_factory.mktemp("first_hour")
    (base / "models").mkdir()
    (base / "models" / "tiny_sdxl").symlink_to(tiny_models["unet"].parent, target_is_directory=True)
    server = ComfyServer(
        comfy_dir, base, {"comfyui-image-alchemy": ROOT, TINY_PACK_NAME: TINY_PACK}, extra_args=("--cache-none",)
    ).start()
    requests.post(server.url + "/settings/Comfy.RightSidePanel.ShowErrorsTab", json=True, timeout=10)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(empty_server):
    with frontend(empty_server) as page:
        # The panel asks Hugging Face for each file's size: no network in tests, so anything off the loopback
        # server is refused here (the panel then shows no size).
        page.page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
        yield page


def _named_model_files(workflow: dict, object_info: dict) -> set[str]:
    """Model file names that a workflow's combo widgets name (what the frontend scans for missing models)."""
    names = set()
    for node in workflows.ui_to_api(workflow, object_info).values():
        spec = object_info[node["class_type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            kind = declared[name][0]
            if (isinstance(kind, list) or kind == "COMBO") and isinstance(value, str) and MODEL_FILE.search(value):
                names.add(value)
    return names


def _open(ui, workflow: dict) -> dict:
    """Opens the workflow as a user does and returns the missing-models panel: {name: (url, folder)} from its
    store and the panel's text."""
    ui.load_workflow(workflow)
    ui.page.wait_for_function(f"() => {STORE}('missingModel').isRefreshingMissingModels === false", timeout=30_000)
    ui.page.wait_for_timeout(1000)
    listed = ui.page.evaluate(
        f"""() => ({STORE}('missingModel').missingModelCandidates || [])
             .map(c => [c.name, c.url || null, c.directory || null])"""
    )
    text = ""
    if listed:
        ui.page.get_by_role("button", name="View details").first.click()
        ui.page.get_by_text("Missing Models").first.wait_for(timeout=10_000)
        text = ui.page.locator("body").inner_text()
    return {"models": {name: (url, folder) for name, url, folder in listed}, "text": text}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_missing_models_panel_lists_every_model_with_its_download(empty_server, ui, path):
    workflow = workflows.load(path)
    named = _named_model_files(workflow, empty_server.object_info())
    assert named, f"{path.name} names no model file"
    panel = _open(ui, workflow)
    assert set(panel["models"]) == named
    embedded = {
        model["name"]: model for node in workflow["nodes"] for model in node.get("properties", {}).get("models", [])
    }
    for name in named:
        assert name in panel["text"], f"{name} not shown in the missing-models panel"
        url, folder = panel["models"][name]
        if name in workflow_specs.MODEL_DOWNLOADS:
            want_url, want_folder = workflow_specs.MODEL_DOWNLOADS[name]
            assert (url, folder) == (want_url, want_folder), name
            assert embedded[name] == {"name": name, "url": want_url, "directory": want_folder}
            assert re.match(r"https://huggingface\.co/[^/]+/[^/]+/resolve/", url), url
            assert ui.page.get_by_role("button", name=f"Download {name}").count() >= 1, name
        else:  # no official Hugging Face home (SAM) or the user's own (a trained LoRA): no download offered
            assert url is None, name
    if workflow_specs.SAM in named:
        note = next(n for n in workflow["nodes"] if n["type"] == "Note")["widgets_values"][0]
        assert workflow_specs.SAM_OFFICIAL in note and "no official Hugging Face home" in note


def _place_stand_ins(server, tiny_models) -> None:
    """Tiny models in the real formats, under the names the workflows ask for, in the folders the panel named."""
    models = server.base_dir / "models"
    for folder in ("checkpoints", "grounding-dino", "sams", "loras"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    for name in (workflow_specs.CHECKPOINT, workflow_specs.SAM3_CHECKPOINT):
        (models / "checkpoints" / name).write_bytes(b"")  # NO_CHECKPOINT_STAND_IN
    tiny_detectors.write_grounding_dino_original_bert_base(models / "grounding-dino", workflow_specs.GROUNDING_DINO)
    tiny_detectors.write_sam(models / "sams" / workflow_specs.SAM)
    for lora in (workflow_specs.SUBJECT_LORA, workflow_specs.SECOND_LORA):
        write_kohya_lora(models / "loras" / lora, tiny_models["unet"])


def _frontend_prompt(ui) -> dict:
    """The API prompt the frontend queues for the graph on the canvas (subgraphs flattened), shrunk for the CPU:
    the tiny checkpoint loader stands in for sd_xl_base_1.0 (NO_CHECKPOINT_STAND_IN), the placed files keep
    their names."""
    prompt = ui.graph_to_prompt()
    workflows.adapt_for_tiny_models(prompt, dino=workflow_specs.GROUNDING_DINO, sam=workflow_specs.SAM)
    return prompt


def _saved_images(server, prompt: dict) -> dict[str, np.ndarray]:
    """Runs the prompt; the first image of each SaveImage, by its filename prefix's last part (final, scene, ...)."""
    entry = server.run(prompt, timeout=600)
    return {
        node["inputs"]["filename_prefix"].rsplit("/", 1)[-1]: np.asarray(server.output_images(entry, node_id)[0])
        for node_id, node in prompt.items()
        if node["class_type"] == "SaveImage"
    }


RUN_WITH_STAND_INS = ["2_two_stage_generation", "4_two_subjects"]


def test_placed_files_clear_the_panel_and_the_workflows_run(empty_server, ui, tiny_models):
    _place_stand_ins(empty_server, tiny_models)
    ui.open()  # a fresh page reads the folders again, as a refresh does
    for path in WORKFLOW_FILES:
        assert _open(ui, workflows.load(path))["models"] == {}, f"{path.stem}: still missing after placing the files"
        if path.stem in RUN_WITH_STAND_INS:
            saved = _saved_images(empty_server, _frontend_prompt(ui))
            assert {image.shape for image in saved.values()} == {(64, 64, 3)}


def test_blueprint_is_in_the_node_library(ui):
    entries = ui.page.evaluate(
        f"""() => {STORE}('subgraph').subgraphBlueprints
             .map(d => ({{name: d.name, display_name: d.display_name, category: d.category,
                          python_module: d.python_module, inputs: Object.keys(d.input.required || {{}})}}))"""
    )
    ours = [e for e in entries if e["display_name"] == BLUEPRINT]
    assert len(ours) == 1, [e["display_name"] for e in entries if "Alchemy" in e["display_name"]]
    assert ours[0]["category"] == "Subgraph Blueprints/Image Alchemy"
    assert ours[0]["inputs"] == [
        "image",
        "model",
        "vae",
        "positive",
        "negative",
        "seed",
        "prompt",
        "lora_name",
        "denoise",
    ]


# Workflow 2 with its five stage-2 nodes replaced by the blueprint, added as the node library adds it
# (subgraph store's getBlueprint + the canvas's _deserializeItems) and wired to the same stage-1 nodes.
USE_BLUEPRINT_JS = """({name, stage2}) => {
  const app = window.app, graph = app.graph, get = (id) => {STORE}(id);
  const find = (type, text) => graph.nodes.find(n => n.type === type && (!text || n.widgets[0].value.includes(text)));
  const ckpt = find("CheckpointLoaderSimple"), scene = find("VAEDecode"), save = graph.nodes.find(
    n => n.type === "SaveImage" && n.widgets[0].value.endsWith("final"));
  const subject = find("CLIPTextEncode", "iklan"), negative = find("CLIPTextEncode", "blurry");
  for (const n of graph.nodes.filter(n => stage2.includes(n.type))) graph.remove(n);
  const blueprint = get('subgraph').getBlueprint(get('subgraph').subgraphBlueprints.find(d => d.display_name === name).name);
  const added = app.canvas._deserializeItems({nodes: blueprint.nodes, subgraphs: blueprint.definitions?.subgraphs},
                                             {position: [800, 900]});
  const node = added.nodes.values().next().value;
  const slot = (input) => node.inputs.findIndex(i => i.name === input);
  scene.connect(0, node, slot("image"));
  ckpt.connect(0, node, slot("model"));
  ckpt.connect(2, node, slot("vae"));
  subject.connect(0, node, slot("positive"));
  negative.connect(0, node, slot("negative"));
  node.connect(0, save, 0);
  return node.type;
}""".replace("{STORE}", STORE)


def test_blueprint_graph_gives_workflow_2s_image_pixel_for_pixel(empty_server, ui, tiny_models):
    _place_stand_ins(empty_server, tiny_models)
    workflow = workflows.load(ROOT / "example_workflows" / "2_two_stage_generation.json")
    ui.load_workflow(workflow)
    by_hand = _frontend_prompt(ui)
    ui.load_workflow(workflow)
    ui.page.evaluate(USE_BLUEPRINT_JS, {"name": BLUEPRINT, "stage2": workflow_specs.BLUEPRINTS[0]["types"]})
    with_blueprint = _frontend_prompt(ui)
    # The flattened blueprint is the same nodes with the same inputs (ids and link ids differ).
    kinds = sorted(node["class_type"] for node in by_hand.values())
    assert sorted(node["class_type"] for node in with_blueprint.values()) == kinds

    def widgets(prompt):
        return sorted(
            json.dumps({k: v for k, v in node["inputs"].items() if not isinstance(v, list)}, sort_keys=True)
            for node in prompt.values()
        )

    assert widgets(with_blueprint) == widgets(by_hand)
    a, b = _saved_images(empty_server, by_hand), _saved_images(empty_server, with_blueprint)
    assert np.array_equal(a["final"], b["final"])
    assert np.array_equal(a["scene"], b["scene"])
    assert not np.array_equal(a["final"], a["scene"])  # the insert repainted something: not a trivial equality
