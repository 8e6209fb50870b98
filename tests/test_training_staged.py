"""The trainer process started before its job is complete (training/staged.py): the same LoRA as a trainer started
on a complete job, and a child that never gets its job (the node failed or was cancelled) ends and leaves
nothing running. The node's side (early start, cancel while it works) is in test_reliability_training.py."""

import time

import pytest
import torch
from image_alchemy.training import child, job, staged
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.unet import UnetSource
from safetensors.torch import load_file
from support.training_data import random_training_data
from tiny_models.pipeline import tiny_ldm_unet_file


@pytest.fixture(scope="module")
def job_parts(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("staged")
    data = random_training_data()
    settings = TrainSettings(
        token="iklan", class_word="disc", rank=2, steps=2, batch_size=2, gradient_accumulation=1, device="cpu"
    )
    source = UnetSource.from_export(tiny_ldm_unet_file(tiny_models, folder))
    return folder, settings, data, source


def test_a_staged_trainer_writes_the_same_lora_as_one_started_on_the_whole_job(job_parts):
    folder, settings, data, source = job_parts
    whole = folder / "whole.safetensors"
    job.write_job(folder / "job_whole", settings, data, unet_path=source, output=whole)
    child.run_and_wait(folder / "job_whole")

    early = folder / "early.safetensors"
    job_dir = folder / "job_early"
    job_dir.mkdir()
    trainer = child.TrainerProcess(job_dir, staged=True)
    try:
        staged.write_unet_start(job_dir, settings, source)
        trainer.advance("unet")
        time.sleep(0.5)  # the node is still encoding while the child reads the UNet
        job.write_job(job_dir, settings, data, unet_path=source, output=early)
        trainer.advance("job")
        steps = []
        trainer.wait(steps.append)
    finally:
        trainer.stop()
    assert [e["step"] for e in steps] == [1, 2]
    log = (job_dir / child.LOG_FILE).read_text()
    assert "trainer libraries imported" in log and "base UNet read in" in log
    assert log.count("reading the base UNet") == 1  # read once, before the job was complete
    a, b = load_file(str(early)), load_file(str(whole))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit (names differ)


def test_a_staged_trainer_stopped_before_its_job_ends_at_once(job_parts):
    folder, *_ = job_parts
    (folder / "job_stopped").mkdir()
    trainer = child.TrainerProcess(folder / "job_stopped", staged=True)
    time.sleep(1.0)  # importing
    started = time.monotonic()
    trainer.stop()
    assert not trainer.process.is_alive() and time.monotonic() - started < child.KILL_AFTER_S + 1


def test_a_staged_trainer_whose_node_gives_up_ends_with_an_error(job_parts):
    """The control pipe closes (the node's process went away, or stop() raced it): the child does not wait for a
    job that never comes."""
    folder, *_ = job_parts
    (folder / "job_orphan").mkdir()
    trainer = child.TrainerProcess(folder / "job_orphan", staged=True)
    try:
        trainer._control.close()
        with pytest.raises(child.TrainingFailed, match="the node stopped before the trainer's 'unet' stage"):
            trainer.wait()
        assert trainer.process.exitcode == 1
    finally:
        trainer.stop()


def test_stages_are_named():
    with pytest.raises(ValueError, match="unknown trainer stage"):
        staged.stage_message("train")
