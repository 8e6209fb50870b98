"""Each training setting is declared once: every TrainSubjectLoRA widget that is a training setting is a
`python -m training fit` flag of the same name, with the same default, options and text (the server's
/object_info against the command's own --help)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from image_alchemy.training import cli

ROOT = Path(__file__).resolve().parent.parent
NODE = "ImageAlchemy_TrainSubjectLoRA"
NOT_SETTINGS = {"lora_name"}  # where the node writes (fit: --out)
WIDGETS = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
FLAG_LINE = re.compile(
    r"^  (--[\w-]+)(?:, --no-[\w-]+)?(?: \{(?P<choices>[^}]*)\}| \[\{(?P<optional>[^}]*)\}\]| \S+)?"
    r"\s+(?P<help>.*?)(?: \(default: (?P<default>.*)\))?$"
)


def fit_help() -> dict[str, dict]:
    text = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "100000"},
    ).stdout
    entries = []  # a flag's line, with its help joined on when argparse puts it on the next line
    for line in text.splitlines():
        if line.startswith("  --"):
            entries.append(line)
        elif entries and line.startswith("   ") and line.strip():
            entries[-1] += "   " + line.strip()
    flags = {}
    for line in entries:
        m = FLAG_LINE.match(line)
        if m:
            choices = m["choices"] or m["optional"]
            flags[m[1]] = {
                "help": m["help"],
                "default": m["default"],
                "choices": choices.split(",") if choices else None,
            }
    return flags


def widgets(spec: dict) -> dict[str, tuple]:
    out = {}
    for section in ("required", "optional"):
        for name, entry in spec["input"].get(section, {}).items():
            kind = "COMBO" if isinstance(entry[0], list) else entry[0]
            if kind in WIDGETS and name not in NOT_SETTINGS:
                options = entry[1] if len(entry) > 1 else {}
                out[name] = (kind, entry[0] if isinstance(entry[0], list) else options.get("options"), options)
    return out


def test_every_setting_widget_is_a_fit_flag_with_the_same_default_options_and_text(comfy):
    node = widgets(comfy.object_info()[NODE])
    flags = fit_help()
    assert len(node) >= 25, sorted(node)
    for name, (kind, options, spec) in node.items():
        flag = "--" + name.replace("_", "-")
        assert flag in flags, f"widget {name} has no fit flag {flag}"
        got = flags[flag]
        assert got["help"] == spec["tooltip"], name
        if kind == "COMBO":
            assert got["choices"] == list(options) and got["default"] == spec["default"], name
        elif kind == "STRING":
            assert got["default"] in ("None", spec["default"]), name  # None: a required flag (token, class word)
        elif kind == "BOOLEAN":
            assert got["default"] == str(spec["default"]), name
        else:
            assert float(got["default"]) == float(spec["default"]), name


def test_flags_keep_the_widget_bounds_and_auto_answers(tmp_path):
    base = [
        "fit",
        "--model",
        "m",
        "--images",
        str(tmp_path),
        "--token",
        "iklan",
        "--class-word",
        "dog",
        "--out",
        "x.safetensors",
    ]
    with pytest.raises(SystemExit):
        cli.parse_args(base + ["--rank", "0"])  # the widget's min is 1
    with pytest.raises(SystemExit):
        cli.parse_args(base + ["--resolution", "100"])  # not a multiple of 8
    args = cli.parse_args(base + ["--alpha", "0", "--gradient-checkpointing", "--device", "cpu"])
    assert args.settings.alpha is None and args.settings.gradient_checkpointing is True  # bare flag = on
    assert args.settings.mixed_precision == "no"  # auto on the CPU
