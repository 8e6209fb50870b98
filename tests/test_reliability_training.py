"""Faults around TrainSubjectLoRA: bad inputs and names through the real server, the trainer child killed from
outside, two trainings queued at once, cancel while encoding and while saving; NaN loss and a full disk in the
child run (`python -m training run JOB`, the process the node starts). Nothing partial is ever left behind."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket
from comfy_server import PromptFailed, trainer_processes
from image_alchemy.training import job
from image_alchemy.training.settings import TrainSettings
from safetensors import safe_open
from support.reliability_helpers import expect_error, shaped_image
from support.training_data import random_training_data
from support.training_graphs import leftovers, loras_dir, train_graph
from tiny_models.pipeline import tiny_ldm_unet_file

ROOT = Path(__file__).resolve().parent.parent


def assert_clean(comfy, lora_file=None):
    assert not trainer_processes(comfy) and not leftovers(comfy)
    if lora_file:
        assert not (loras_dir(comfy) / lora_file).exists()
    assert comfy.alive()


@pytest.mark.parametrize(
    "name",
    [
        "/tmp/rel_abs",
        "sub/../../rel_up",
        "..\\..\\rel_win",
        "rel;rm -rf ~",
        "",
        "rel\nnewline",
        "C:/rel_drive",
        "rel/./dot",
    ],
)
def test_unsafe_lora_names_are_refused_and_nothing_is_written(comfy, name):
    g, _ = train_graph(lora_name=name)
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: lora_name .* is not a safe file name", r"e\.g\. 'iklan_dog'")
    assert not list(Path("/tmp").glob("rel_abs*")) and not list(comfy.base_dir.rglob("rel_up*"))
    assert_clean(comfy)


def test_a_model_family_the_trainer_does_not_train_is_refused(comfy):
    g, _ = train_graph(model="refiner")  # ComfyUI's SDXLRefiner: not SDXL base, nor any declared family
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: the MODEL is SDXLRefiner .*does not train", r"SDXL or SD1\.5")
    assert_clean(comfy, "rel_never.safetensors")


def test_empty_batch_and_grey_images_are_refused(comfy):
    g, _ = train_graph(count=0)
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: no images", r"4–5 subject photos")
    g, _ = train_graph(images=lambda g: {"images": shaped_image(g, batch=4, channels=1)})
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: .*RGB")
    assert_clean(comfy, "rel_never.safetensors")


def test_all_zero_subject_mask_is_refused(comfy):
    g, _ = train_graph(
        images=lambda g: {
            "images": shaped_image(g, batch=2),
            "mask": g.node("SolidMask", value=0.0, width=64, height=64).out(0),
        }
    )
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: the subject mask is empty", r"connect a mask")
    assert_clean(comfy, "rel_never.safetensors")


@pytest.mark.parametrize("count", [1, 200])
def test_one_or_two_hundred_images_train(comfy, count):
    """Documented result: any batch size trains (the paper uses 4–5); 200 images at 64 px encode in seconds."""
    name = f"rel_{count}_images"
    g, _ = train_graph(lora_name=name, count=count, size=32 if count > 1 else 96)
    comfy.run(g.finalize(), timeout=300)
    with safe_open(str(loras_dir(comfy) / f"{name}.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_num_train_images"] == str(count)
    assert_clean(comfy)


def test_a_token_that_is_several_tokens_trains_with_a_warning(comfy):
    start = len(comfy.log_tail(10**9))
    g, _ = train_graph(lora_name="rel_multi_token", token="qzxjvkw")
    comfy.run(g.finalize(), timeout=300)
    assert (loras_dir(comfy) / "rel_multi_token.safetensors").exists()
    assert "'qzxjvkw' is" in comfy.log_tail(10**9)[start:] and "Rare Token Picker" in comfy.log_tail(10**9)[start:]


def test_trainer_killed_from_outside_fails_the_prompt_and_leaves_nothing(comfy):
    g, _ = train_graph(lora_name="rel_killed", steps=20000)
    prompt_id = comfy.queue(g.finalize())
    deadline = time.monotonic() + 120
    while not trainer_processes(comfy) and time.monotonic() < deadline:
        time.sleep(0.2)
    ((pid, _),) = trainer_processes(comfy)
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PromptFailed, match=r"TrainSubjectLoRA: training failed: the trainer exited with status -9"):
        comfy.wait(prompt_id, timeout=60)
    assert_clean(comfy, "rel_killed.safetensors")


def test_two_trainings_queued_at_once_both_finish_in_order(comfy):
    ids = [comfy.queue(train_graph(lora_name=f"rel_queued_{i}", seed=i)[0].finalize()) for i in range(2)]
    entries = [comfy.wait(pid, timeout=300) for pid in ids]
    starts = [next(m[1]["timestamp"] for m in e["status"]["messages"] if m[0] == "execution_start") for e in entries]
    assert starts == sorted(starts)
    hashes = []
    for i in range(2):
        with safe_open(str(loras_dir(comfy) / f"rel_queued_{i}.safetensors"), framework="pt") as f:
            hashes.append(f.metadata()["image_alchemy.job_hash"])
    assert hashes[0] != hashes[1]
    assert_clean(comfy)


def _cancel_when(comfy, prompt, stop) -> dict:
    """Queues ``prompt``, interrupts when ``stop(event)`` is true for a websocket event; returns the history entry."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}", timeout=120)
    try:
        prompt_id = comfy.queue(prompt)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            message = ws.recv()
            if isinstance(message, str) and stop(json.loads(message)):
                comfy.interrupt()
                break
        else:
            pytest.fail("the stage to cancel never came")
    finally:
        ws.close()
    try:
        return comfy.wait(prompt_id, timeout=60)
    except PromptFailed as e:
        return e.details


def test_cancel_while_encoding_leaves_nothing(comfy):
    g, train = train_graph(lora_name="rel_cancel_encode", count=64, size=256, resolution=256, steps=500)
    entry = _cancel_when(comfy, g.finalize(), lambda e: e["type"] == "executing" and e["data"].get("node") == train.id)
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    assert_clean(comfy, "rel_cancel_encode.safetensors")


def test_cancel_while_drawing_class_images_stops_the_early_trainer_and_leaves_nothing(comfy):
    """The trainer process starts before the node encodes and draws class images (it imports meanwhile): a cancel
    in that phase ends it too, and leaves no job folder, LoRA or class-image file."""
    g, train = train_graph(lora_name="rel_cancel_prior", steps=500, prior_images=4, seed=11)
    seen = []

    def drawing(event):
        if event["type"] == "progress" and event["data"].get("node") == train.id and event["data"]["max"] == 4:
            seen.append(trainer_processes(comfy))
            return True
        return False

    entry = _cancel_when(comfy, g.finalize(), drawing)
    assert seen and seen[0], "no trainer process while the class images were drawn"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    assert_clean(comfy, "rel_cancel_prior.safetensors")
    assert not list((comfy.base_dir / "models" / "image_alchemy" / "class_cache").glob("*.partial"))


def test_cancel_while_saving_leaves_no_partial_lora(comfy):
    """Interrupt at the last step's event, while the child exports and writes: afterwards there is either no
    LoRA or a complete one (the rename is atomic), and never a .partial file or a job folder."""
    g, _ = train_graph(lora_name="rel_cancel_save", steps=3, rank=64, batch_size=1)
    entry = _cancel_when(
        comfy,
        g.finalize(),
        lambda e: (
            e["type"] == "image_alchemy.train_progress"
            and e["data"].get("phase") == "step"
            and e["data"].get("step") == 3
        ),
    )
    assert entry["status"]["completed"] is not None
    assert_clean(comfy)
    path = loras_dir(comfy) / "rel_cancel_save.safetensors"
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            assert sum(k.endswith(".lora_down.weight") for k in f.keys()) == 32


# -- the child run itself ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def child_job(tiny_models, tmp_path_factory):
    """A job folder for `python -m training run` with random latents of the tiny model's shapes."""
    folder = tmp_path_factory.mktemp("rel_child")
    data = random_training_data()
    unet = tiny_ldm_unet_file(tiny_models, folder)

    def make(name, **settings):
        out = folder / "loras" / f"{name}.safetensors"
        values = dict(token="iklan", class_word="disc", rank=2, steps=3, batch_size=2, device="cpu")
        values.update(settings)
        job.write_job(folder / name, TrainSettings(**values), data, unet_path=unet, output=out)
        return folder / name, out

    return make


def run_child(job_dir: Path, file_size_limit: int | None = None) -> tuple[int, list[dict]]:
    def limit():  # the child's own limit: a write past it fails with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    proc = subprocess.run(
        [sys.executable, "-m", "training", "run", str(job_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit if file_size_limit else None,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def test_nan_loss_stops_with_an_error_and_no_lora(child_job):
    job_dir, out = child_job("rel_nan", learning_rate=1e6, steps=20)
    code, events = run_child(job_dir)
    assert code == 1
    assert "training diverged" in events[-1]["error"] and "lower the learning rate" in events[-1]["error"]
    assert not out.exists() and not list(out.parent.glob("*.partial"))


def test_disk_full_while_saving_fails_cleanly(child_job):
    job_dir, out = child_job("rel_full")
    code, events = run_child(job_dir, file_size_limit=4096)
    assert code == 1
    assert events and [e for e in events if "step" in e]  # it trained; only the write failed
    assert "could not write the LoRA" in events[-1]["error"] and "free disk space" in events[-1]["error"]
    assert not out.exists() and not list(out.parent.glob("*.partial"))
