"""`python -m evaluation` as a user runs it (a subprocess from the pack root) on tiny backbones in real formats."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from image_alchemy.alchemy import backbones, metrics, quality
from PIL import Image
from tiny_models.backbones import pictures

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "evaluation", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_backbones):
    root = tmp_path_factory.mktemp("cli")
    gen, ref = root / "generated", root / "references"
    gen.mkdir(), ref.mkdir()
    prompts = ["a photo of sks dog on a beach", "a photo of sks dog on a beach", "a sks dog in the snow"]
    for i, (image, prompt) in enumerate(zip(pictures(3, seed=11), prompts)):
        Image.fromarray(image).save(gen / f"gen_{i}.png")
        (gen / f"gen_{i}.txt").write_text(prompt + "\n")
    for i, image in enumerate(pictures(3, seed=12)):
        Image.fromarray(image).save(ref / f"ref_{i}.png")
    return {"root": root, "gen": gen, "ref": ref, "prompts": prompts, **tiny_backbones}


def test_cli_writes_csv_and_json_that_match_the_library(data, tmp_path):
    out = tmp_path / "report"
    r = run_cli(
        "--generated",
        data["gen"],
        "--references",
        data["ref"],
        "--dino",
        data["dino"],
        "--clip",
        data["clip"],
        "--token",
        "sks",
        "--class-word",
        "dog",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert "overall" in r.stdout and "DINO" in r.stdout and "BRISQUE" in r.stdout
    report = json.loads((out / "metrics.json").read_text())
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    with open(out / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert [row["prompt"] for row in summary] == [data["prompts"][0], data["prompts"][2], "overall", metrics.REAL]
    assert [row["name"] for row in per_image] == ["gen_0.png", "gen_1.png", "gen_2.png"]
    assert report["settings"]["clip_t_class_word"] == "dog"

    # The same numbers straight from the library on the same pixels.
    load = lambda folder: [np.array(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    direct = metrics.evaluate(
        load(data["gen"]),
        data["prompts"],
        load(data["ref"]),
        dino=backbones.DinoBackbone.load(str(data["dino"])),
        clip=backbones.ClipBackbone.load(str(data["clip"])),
        quality=quality.brisque_scores,
        clip_t_prompts=[p.replace("sks", "dog") for p in data["prompts"]],
    )
    for row, expected in zip(per_image, direct.images):
        for m in metrics.METRICS:
            assert float(row[m]) == pytest.approx(getattr(expected, m), abs=1e-5), m
    for row, expected in zip(report["summary"], direct.summary):
        assert row["n"] == expected.n
        for m in metrics.METRICS:
            want = getattr(expected, m)
            assert (row[m] is None) if want is None else row[m] == pytest.approx(want, abs=1e-5), m


def test_cli_identical_images_score_one_with_prompt_file_and_masks(data, tmp_path):
    gen, ref, masks = tmp_path / "gen", tmp_path / "ref", tmp_path / "masks"
    for folder in (gen, ref, masks):
        folder.mkdir()
    image = Image.open(data["ref"] / "ref_0.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 16:56] = 255
    for i in range(2):
        image.save(gen / f"g{i}.png")
        image.save(ref / f"r{i}.jpg", quality=100)  # another format: decoded pixels differ slightly
        Image.fromarray(mask).save(masks / f"g{i}.png")
    (tmp_path / "prompts.csv").write_text("file,prompt\ng0.png,a photo of sks dog\ng1,a sks dog\n")
    r = run_cli(
        "--generated",
        gen,
        "--references",
        gen,
        "--dino",
        data["dino"],
        "--clip",
        data["clip"],
        "--prompts",
        tmp_path / "prompts.csv",
        "--no-brisque",
        "--out",
        tmp_path / "same",
    )
    assert r.returncode == 0, r.stderr
    overall = json.loads((tmp_path / "same" / "metrics.json").read_text())["summary"][-2]
    assert overall["prompt"] == "overall" and overall["brisque"] is None
    assert overall["dino"] == pytest.approx(1.0, abs=1e-5) and overall["clip_i"] == pytest.approx(1.0, abs=1e-5)

    r = run_cli(
        "--generated",
        gen,
        "--references",
        ref,
        "--dino",
        data["dino"],
        "--prompt",
        "a photo of sks dog",
        "--generated-masks",
        masks,
        "--margin",
        "0",
        "--no-brisque",
        "--out",
        tmp_path / "masked",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "masked" / "metrics.json").read_text())
    assert report["settings"]["subject_region"] is True
    # Crop of the generated images vs whole references: no longer identical.
    assert report["summary"][-2]["dino"] < 0.9999


def test_cli_names_what_is_missing(data, tmp_path):
    r = run_cli(
        "--generated",
        data["gen"],
        "--references",
        data["ref"],
        "--dino",
        tmp_path / "dino-vits16",
        "--no-brisque",
        "--out",
        tmp_path / "x",
    )
    assert r.returncode == 1
    assert "DINO backbone folder not found" in r.stderr and "preprocessor_config.json" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()

    bare = tmp_path / "bare"
    bare.mkdir()
    Image.fromarray(pictures(1)[0]).save(bare / "a.png")
    r = run_cli("--generated", bare, "--references", data["ref"], "--dino", data["dino"], "--no-brisque")
    assert r.returncode == 1 and "no prompts: give --prompt, --prompts FILE, or a .txt" in r.stderr

    r = run_cli("--generated", bare, "--references", data["ref"], "--no-brisque", "--prompt", "x")
    assert r.returncode == 2 and "nothing to compute" in r.stderr


def test_cli_imports_no_comfyui_and_not_the_nodes_package():
    code = (
        "import sys, evaluation.cli; bad = sorted(m for m in sys.modules if m == 'nodes' "
        "or m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths')); print(bad); sys.exit(bool(bad))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
