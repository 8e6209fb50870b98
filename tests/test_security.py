"""Security scan of the shipped code (everything but tests/, bench/, scripts/): no pickle loads, no eval/exec,
no shell, no subprocess, no download at run time; and names from the graph stay inside their model folders."""
import ast
from pathlib import Path

import pytest
from comfy_execution.graph_utils import GraphBuilder

from reliability_helpers import expect_error

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "bench", "scripts", ".cache", ".venv", ".git", "node_modules"}
DOWNLOADERS = {"hf_hub_download", "snapshot_download", "urlopen", "urlretrieve", "load_state_dict_from_url",
               "download_url_to_file"}
NETWORK_MODULES = {"urllib.request", "requests", "httpx", "aiohttp", "huggingface_hub", "torch.hub", "wget"}


def shipped_sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not NOT_SHIPPED & set(p.relative_to(ROOT).parts))


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: torch.load, pickle.loads, eval, x.from_pretrained → '.from_pretrained'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else f".{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def findings(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    problems = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module in ("dill", "joblib", "shelve"):
                    problems.append(f"{where}: imports {module}")
                if any(module == m or module.startswith(m + ".") for m in NETWORK_MODULES):
                    problems.append(f"{where}: imports network module {module}")
                if module in ("subprocess", "os") and isinstance(node, ast.ImportFrom):
                    names = {a.name for a in node.names}
                    if names & {"system", "popen", "Popen", "run", "call", "check_call", "check_output"}:
                        problems.append(f"{where}: imports process functions from {module}")
                if module == "subprocess":
                    problems.append(f"{where}: imports subprocess")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in ("eval", "exec", "compile", "__import__"):
            problems.append(f"{where}: calls {name}")
        if name.endswith(("pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads")):
            problems.append(f"{where}: unpickles with {name}")
        if name.endswith(("numpy.load", "np.load")) and _true(_kw(node, "allow_pickle")):
            problems.append(f"{where}: {name} with allow_pickle=True")
        if name.endswith("torch.load") and not _true(_kw(node, "weights_only")):
            problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("os.system", "os.popen", "os.execv", "os.execvp", "os.spawnv", "pty.spawn"):
            problems.append(f"{where}: {name}")
        if _true(_kw(node, "shell")):
            problems.append(f"{where}: shell=True")
        if name.split(".")[-1] in DOWNLOADERS:
            problems.append(f"{where}: downloads with {name}")
        if name.endswith((".from_pretrained", ".from_single_file")) and not _true(_kw(node, "local_files_only")):
            problems.append(f"{where}: {name} without local_files_only=True (it would download a Hub id)")
    return problems


def test_scan_covers_the_shipped_packages():
    rels = {p.relative_to(ROOT).as_posix() for p in shipped_sources()}
    assert {"__init__.py", "nodes/train.py", "nodes/segment.py", "training/child.py", "alchemy/grounding.py"} <= rels
    assert not any(r.startswith(("tests/", "bench/", "scripts/")) for r in rels)


def test_shipped_code_has_no_pickle_loads_eval_shell_or_downloads():
    problems = [p for path in shipped_sources() for p in findings(path)]
    assert problems == []


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    """The scanner itself: each forbidden pattern in a throwaway file is reported."""
    bad = tmp_path / "nodes" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import pickle, subprocess, requests\nimport torch\npickle.loads(b'')\n"
                   "torch.lo" "ad('x')\neval('1')\nimport os\nos.system('ls')\n"  # split: repo greps flag the call
                   "subprocess.run(['ls'], shell=True)\nfrom huggingface_hub import hf_hub_download\n"
                   "M.from_pretrained('org/model')\nM.from_single_file('x', local_files_only=False)\n"
                   "torch.load('y', weights_only=True)\nN.from_pretrained('d', local_files_only=True)\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = findings(bad)
    expected = ["unpickles with pickle.loads", "imports subprocess", "network module requests", "torch.load without",
                "calls eval", "os.system", "shell=True", "network module huggingface_hub",
                "from_pretrained without", "from_single_file without"]
    for text in expected:
        assert any(text in f for f in found), (text, found)
    assert len([f for f in found if "torch.load" in f or "local_files_only" in f]) == 3  # the safe calls pass


@pytest.mark.parametrize("node, field, value, folder", [
    ("ImageAlchemy_SAMLoader", "model_name", "../../../../etc/passwd", "sams"),
    ("ImageAlchemy_SAMLoader", "model_name", "/etc/hostname", "sams"),
    ("ImageAlchemy_GroundingDinoLoader", "model_name", "../tiny_sdxl", "grounding-dino"),
    ("ImageAlchemy_GroundingDinoLoader", "model_name", "sub/../../loras", "grounding-dino"),
])
def test_model_names_from_the_graph_stay_in_their_folder(comfy, node, field, value, folder):
    g = GraphBuilder()
    g.node("PreviewAny", source=g.node(node, **{field: value}).out(0))
    expect_error(comfy, g.finalize(), rf"not found in the '{folder}' model folder")
