"""Checkpoints and resume on the CPU, in the trainer's own run function: save_every writes step-named LoRAs with
their step, and a run resumed from step k writes the same LoRA bytes as the run that was never interrupted."""

import json

import pytest
import torch
from image_alchemy.training import job
from image_alchemy.training.checkpoint import state_path
from image_alchemy.training.lora_file import read_metadata
from image_alchemy.training.optimizers import offered
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.trainer import build_lora_unet
from image_alchemy.training.unet import load_ldm_unet
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models.pipeline import encode_subject_data


@pytest.fixture(scope="module")
def subject_64(pipeline_dir):
    return encode_subject_data(
        pipeline_dir, TrainSettings(token="iklan", class_word="disc", flip=True), size=64, with_masks=True
    )


def _settings(**values):
    base = dict(
        token="iklan",
        class_word="disc",
        steps=6,
        batch_size=2,
        rank=2,
        seed=3,
        flip=True,
        noise_offset=0.05,
        device="cpu",
        gradient_accumulation=2,
        learning_rate=1e-3,
        resolution=64,
        lr_scheduler="cosine",
        apt_loss_weighting=True,
        drift_penalty="delta",
    )
    return TrainSettings(**{**base, **values})


def _run(tmp_path, name, data, unet_file, settings, resume=None):
    out = tmp_path / "loras" / f"{name}.safetensors"
    folder = job.write_job(tmp_path / f"job_{name}", settings, data, unet_path=unet_file, output=out, resume=resume)
    events = []
    job.run_job(folder, progress=events.append)
    return out, events


def _tensors(path):
    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def test_resumed_run_writes_the_uninterrupted_runs_lora_bytes(subject_64, unet_file, tmp_path):
    whole, events = _run(tmp_path, "whole", subject_64, unet_file, _settings(save_every=2))
    written = sorted(p.name for p in whole.parent.iterdir())
    assert written == [
        "whole-step2.safetensors",
        "whole-step2.trainstate",
        "whole-step4.safetensors",
        "whole-step4.trainstate",
        "whole.safetensors",
    ]
    assert [e.get("checkpoint") for e in events] == [
        None,
        "whole-step2.safetensors",
        None,
        "whole-step4.safetensors",
        None,
        None,
    ]
    for step in (2, 4):
        meta = read_metadata(whole.parent / f"whole-step{step}.safetensors")
        assert meta["image_alchemy.step"] == str(step) and len(json.loads(meta["image_alchemy.losses"])) == step
        assert meta["ss_output_name"] == f"whole-step{step}"
    assert read_metadata(whole)["image_alchemy.step"] == "6"

    resumed, events = _run(
        tmp_path,
        "resumed",
        subject_64,
        unet_file,
        _settings(save_every=0),
        resume=state_path(whole.parent / "whole-step2.safetensors"),
    )
    assert [e["step"] for e in events] == [3, 4, 5, 6]
    assert _tensors(resumed) == _tensors(whole)
    ours, theirs = read_metadata(resumed), read_metadata(whole)
    assert ours["image_alchemy.losses"] == theirs["image_alchemy.losses"]
    assert ours["image_alchemy.apt_state"] == theirs["image_alchemy.apt_state"]


def test_resume_refuses_other_settings_photos_or_a_missing_state(subject_64, unet_file, tmp_path):
    whole, _ = _run(tmp_path, "base", subject_64, unet_file, _settings(steps=3, save_every=2))
    state = state_path(whole.parent / "base-step2.safetensors")
    with pytest.raises(ValueError, match=r"other settings \(rank\)"):
        _run(tmp_path, "r1", subject_64, unet_file, _settings(steps=3, rank=4), resume=state)
    moved = subject_64.latents + 0.5
    data = type(subject_64)(**{**subject_64.__dict__, "latents": moved})
    with pytest.raises(ValueError, match="other photos"):
        _run(tmp_path, "r2", data, unet_file, _settings(steps=3), resume=state)
    with pytest.raises(ValueError, match="not before steps"):
        _run(tmp_path, "r3", subject_64, unet_file, _settings(steps=2), resume=state)
    with pytest.raises(ValueError, match="no resume state"):
        _run(tmp_path, "r4", subject_64, unet_file, _settings(steps=3), resume=tmp_path / "nothing.trainstate")
    # More steps than the checkpoint's run: allowed (train further).
    longer, events = _run(tmp_path, "longer", subject_64, unet_file, _settings(steps=4), resume=state)
    assert [e["step"] for e in events] == [3, 4]
    with safe_open(str(longer), framework="pt") as f:
        assert f.metadata()["image_alchemy.step"] == "4"


@pytest.mark.parametrize("optimizer", [o for o in offered() if o != "adamw"])  # adamw: the test above
def test_every_optimizer_resumes_bit_for_bit(optimizer, subject_64, unet_file, tmp_path):
    """The state file holds the optimizer's own state_dict (Prodigy's distance estimate in its param groups,
    Adafactor's factored moments), so a resumed run writes the uninterrupted run's bytes whichever trains."""
    settings = dict(steps=4, optimizer=optimizer, lr_warmup_steps=1)
    whole, _ = _run(tmp_path, "whole", subject_64, unet_file, _settings(save_every=2, **settings))
    state = state_path(whole.parent / "whole-step2.safetensors")
    resumed, events = _run(tmp_path, "resumed", subject_64, unet_file, _settings(**settings), resume=state)
    assert [e["step"] for e in events] == [3, 4]
    assert _tensors(resumed) == _tensors(whole)
    assert read_metadata(resumed)["image_alchemy.losses"] == read_metadata(whole)["image_alchemy.losses"]
    if optimizer == "prodigy":  # the step size shown is d·lr (d from 1e-6), not the schedule's factor of lr 1.0
        assert all(0 < e["lr"] < 0.01 for e in events)
    with pytest.raises(ValueError, match=r"other settings \(optimizer\)"):
        _run(tmp_path, "other", subject_64, unet_file, _settings(steps=4, lr_warmup_steps=1), resume=state)


def test_a_state_of_the_adamw_only_format_still_resumes(subject_64, unet_file, tmp_path):
    """States written before the choice of optimizer (format /1: AdamW's moments as adam.<key>.<parameter>)."""
    whole, _ = _run(tmp_path, "whole", subject_64, unet_file, _settings(steps=4, save_every=2))
    state = state_path(whole.parent / "whole-step2.safetensors")
    tensors, meta = load_file(str(state)), read_metadata(state)
    unet = build_lora_unet(load_ldm_unet(unet_file)[0], _settings(steps=4), torch.device("cpu"))
    names = [name for name, p in unet.named_parameters() if p.requires_grad]  # the optimizer's order
    old = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    for index, name in enumerate(names):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            old[f"adam.{key}.{name}"] = tensors[f"optimizer.state.{index}.{key}"]
    settings = json.loads(meta.pop("settings"))
    del settings["optimizer"], meta["optimizer"]
    meta.update(format="image_alchemy.train_state/1", settings=json.dumps(settings, sort_keys=True))
    save_file(old, str(state), metadata=meta)
    resumed, _ = _run(tmp_path, "resumed", subject_64, unet_file, _settings(steps=4), resume=state)
    assert _tensors(resumed) == _tensors(whole)
