"""The drift-free options in the trainer, the job file and `python -m training fit`, on the tiny model:
every term shows up and trains, the same seed gives the same LoRA, class images are drawn once and cached,
missing data is an actionable error, and the default stays the paper-001 plain objective."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_alchemy.training import job
from image_alchemy.training.fit import add_class_data, class_images, load_pipeline
from image_alchemy.training.lora_file import read_metadata
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.trainer import train
from image_alchemy.training.unet import load_ldm_unet
from tiny_models.pipeline import encode_subject_data
from tiny_models.subjects import write_subject_folder

ROOT = Path(__file__).resolve().parent.parent
ALL_ON = dict(
    prior_images=2,
    drift_penalty="delta",
    apt_augment=True,
    apt_augment_p_max=1.0,
    apt_views=2,
    apt_loss_weighting=True,
    apt_features=True,
    apt_attention=True,
)


def settings(**values) -> TrainSettings:
    base = dict(
        token="iklan",
        class_word="disc",
        steps=4,
        batch_size=2,
        rank=2,
        learning_rate=1e-3,
        device="cpu",
        gradient_accumulation=1,
    )
    return TrainSettings(**{**base, **values})


@pytest.fixture(scope="module")
def data_all(pipeline_dir):
    """Subject at 64 px with 2 augmented views per image, plus 2 class images drawn by the tiny pipeline."""
    s = settings(**ALL_ON)
    data = encode_subject_data(pipeline_dir, s, size=64)
    pipe = load_pipeline(str(pipeline_dir))
    return add_class_data(pipe, data, s, 64, model_hash="tiny", steps=2)


def _train(unet_file, data, s):
    events = []
    unet, _config, _hash = load_ldm_unet(unet_file)
    result = train(unet, data, s, progress=events.append)
    return result, events


def test_every_option_adds_its_term_and_the_lora_trains(unet_file, data_all):
    s = settings(**ALL_ON)
    assert data_all.augmented_latents.shape == (8, 4, 8, 8) and data_all.class_latents.shape == (2, 4, 8, 8)
    result, events = _train(unet_file, data_all, s)
    terms = [e["terms"] for e in events]
    assert set(terms[0]) == {"denoise", "prior", "drift", "features", "attention"}
    assert terms[0]["drift"] == 0.0 < terms[-1]["drift"]  # peft starts B at 0: ΔW = 0, then it grows
    assert terms[-1]["features"] > 0 and terms[-1]["attention"] > 0 and terms[-1]["prior"] > 0
    gamma = json.loads(result.metadata["image_alchemy.apt_state"])["gamma"]
    assert len(gamma) == 10 and all(0.0 <= g <= 1.0 for g in gamma)
    for e in events:  # the logged loss is the sum of its (weighted) terms
        assert e["loss"] == pytest.approx(sum(e["terms"].values()), rel=1e-5)
    assert (
        s.regularizer() == "prior(2, w=1)+drift(delta, λ=0.005)+apt(augment, loss_weight, features=0.5, attention=30)"
    )


def test_same_seed_same_lora_with_options_through_a_job(unet_file, data_all, tmp_path):
    s = settings(**ALL_ON, steps=2)

    def run(name):
        out = tmp_path / f"{name}.safetensors"
        job.write_job(tmp_path / name, s, data_all, unet_path=unet_file, output=out)
        path = job.run_job(tmp_path / name)
        from safetensors.torch import load_file

        return load_file(str(path)), read_metadata(path)

    (first, meta), (again, _) = run("a"), run("b")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert meta["image_alchemy.regularizer"].startswith("prior(2") and "image_alchemy.apt_state" in meta


def test_default_is_the_plain_objective(unet_file, data_all):
    result, events = _train(unet_file, data_all, settings(steps=2))
    assert all("terms" not in e for e in events) and result.metadata == {}
    assert settings().regularizer() == "none"


@pytest.mark.parametrize(
    "values, missing, message",
    [
        ({"prior_images": 2}, "class_latents", "generate and encode the class images"),
        ({"apt_augment": True}, "augmented_latents", "encode the views too"),
    ],
)
def test_missing_option_data_is_an_actionable_error(data_all, values, missing, message):
    from dataclasses import replace

    with pytest.raises(ValueError, match=message):
        replace(data_all, **{missing: None}).check(settings(**values, apt_views=2))


def test_settings_refuse_bad_option_values():
    with pytest.raises(ValueError, match="drift_penalty must be one of"):
        settings(drift_penalty="l2").validate()
    with pytest.raises(ValueError, match="apt_augment_p_max"):
        settings(apt_augment_p_max=1.5).validate()
    assert settings(drift_penalty="params").drift_lambda == 1e-6 and settings(drift_penalty="off").drift_lambda == 0
    assert settings(drift_penalty="delta", drift_weight=0.25).drift_lambda == 0.25


def test_class_images_are_cached_by_model_prompt_and_seed(pipeline_dir, tmp_path):
    pipe = load_pipeline(str(pipeline_dir))
    s = settings(prior_images=2)
    first = class_images(pipe, s, 64, model_hash="m1", steps=2, cache_dir=str(tmp_path))
    files = sorted(tmp_path.glob("class_*.png"))
    assert first.shape == (2, 3, 64, 64) and len(files) == 2 and first.min() >= -1 and first.max() <= 1
    stamps = [f.stat().st_mtime_ns for f in files]
    again = class_images(pipe, s, 64, model_hash="m1", steps=2, cache_dir=str(tmp_path))
    assert torch.equal(first, again) and [f.stat().st_mtime_ns for f in files] == stamps
    class_images(pipe, s, 64, model_hash="m2", steps=2, cache_dir=str(tmp_path))  # other model: drawn anew
    assert len(list(tmp_path.glob("class_*.png"))) == 4 and not list(tmp_path.glob("*.partial"))


def test_fit_command_with_every_option(pipeline_dir, tmp_path):
    images = write_subject_folder(tmp_path / "photos", count=2, size=64)
    out = tmp_path / "drift.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "training",
        "fit",
        "--model",
        str(pipeline_dir),
        "--images",
        str(images),
        "--token",
        "iklan",
        "--class-word",
        "disc",
        "--out",
        str(out),
        "--resolution",
        "64",
        "--steps",
        "2",
        "--gradient-accumulation",
        "1",
        "--batch-size",
        "2",
        "--rank",
        "2",
        "--device",
        "cpu",
        "--prior-images",
        "2",
        "--class-dir",
        str(tmp_path / "class"),
        "--class-steps",
        "2",
        "--drift-penalty",
        "params",
        "--drift-weight",
        "0.001",
        "--apt-augment",
        "--apt-views",
        "2",
        "--apt-loss-weighting",
        "--apt-features",
        "--apt-attention",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert set(events[0]["terms"]) == {"denoise", "prior", "drift", "features", "attention"}
    assert len(list((tmp_path / "class").glob("class_*.png"))) == 2
    assert read_metadata(out)["image_alchemy.regularizer"] == (
        "prior(2, w=1)+drift(params, λ=0.001)+apt(augment, loss_weight, features=0.5, attention=30)"
    )
    help_text = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--prior-images",
        "--prior-weight",
        "--drift-penalty",
        "--drift-weight",
        "--apt-augment",
        "--apt-augment-p-max",
        "--apt-loss-weighting",
        "--apt-features",
        "--apt-attention",
        "--class-dir",
    ):
        assert option in help_text
