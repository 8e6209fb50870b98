"""The choice of optimizer (training/optimizers.py): each one offered trains, 8-bit AdamW is offered only where
bitsandbytes is installed, and a missing package is said with the install command. Each one's bit-for-bit resume
is in test_training_checkpoints.py."""

import importlib.util
import sys

import pytest
import torch
from image_alchemy.training.declare import declared
from image_alchemy.training.optimizers import build_optimizer, offered
from image_alchemy.training.settings import TrainSettings


def _low_rank_fit(optimizer: str, steps: int = 300) -> tuple[float, float]:
    """A LoRA-shaped problem: B·A (B zero at the start, as peft's) fitted to a rank-2 target; first and last loss."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(16, 2, generator=g) @ torch.randn(2, 16, generator=g)
    a = torch.nn.Parameter(torch.randn(4, 16, generator=g) / 4)
    b = torch.nn.Parameter(torch.zeros(16, 4))
    settings = TrainSettings(optimizer=optimizer, learning_rate=1e-2, device="cpu")
    opt = build_optimizer([a, b], settings)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((b @ a - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


@pytest.mark.parametrize("optimizer", offered())
def test_each_offered_optimizer_trains(optimizer):
    first, last = _low_rank_fit(optimizer)
    assert last < first / 10, (optimizer, first, last)


def test_prodigy_finds_its_step_size_whatever_the_learning_rate():
    """learning_rate is not Prodigy's: its steps come from its estimate d, grown from 1e-6."""
    p = torch.nn.Parameter(torch.zeros(8))
    for lr in (1e-7, 1e-2):
        opt = build_optimizer([p], TrainSettings(optimizer="prodigy", learning_rate=lr))
        assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[0]["d"] == 1e-6


def test_8bit_adamw_is_offered_only_where_bitsandbytes_is_installed():
    assert offered(installed=lambda package: False) == ("adamw", "prodigy", "adafactor")
    assert offered(installed=lambda package: True) == ("adamw", "prodigy", "adafactor", "adamw8bit")
    choices = next(d.spec.choices for d in declared(TrainSettings) if d.name == "optimizer")
    assert choices == offered()  # the node's combo and the `fit` flag's choices
    assert ("adamw8bit" in choices) == (importlib.util.find_spec("bitsandbytes") is not None)


def test_a_missing_package_is_said_with_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as where it is not installed
    with pytest.raises(
        RuntimeError,
        match=r"adamw8bit needs the bitsandbytes package.*add it to the Python environment ComfyUI runs in, or choose adamw",
    ):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainSettings(optimizer="adamw8bit"))
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adamw', 'prodigy'"):
        TrainSettings(optimizer="lion").validate()


def test_an_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    """The .trainstate's flattening: tensors (one shared by two parameters, as bitsandbytes' quantization map is),
    int keys, tuples, None, inf and dtypes come back equal, with no pickle."""
    import json

    from image_alchemy.training.checkpoint import _flatten, _unflatten, _unshared
    from safetensors.torch import load_file, save_file

    qmap = torch.linspace(-1, 1, 8)
    state = {
        "state": {0: {"step": torch.tensor(3.0), "qmap": qmap, "RMS": 0.25}, 1: {"qmap": qmap, "n": 7}},
        "param_groups": [
            {"betas": (None, 0.999), "growth_rate": float("inf"), "dtype": torch.bfloat16, "params": [0, 1]}
        ],
    }
    tensors = {}
    structure = json.dumps(_flatten(state, "optimizer", tensors))
    save_file(_unshared(tensors), str(tmp_path / "s.safetensors"))
    back = _unflatten(json.loads(structure), load_file(str(tmp_path / "s.safetensors")))
    assert back["param_groups"] == state["param_groups"]
    assert back["state"][0]["RMS"] == 0.25 and back["state"][1]["n"] == 7
    assert torch.equal(back["state"][0]["step"], state["state"][0]["step"])
    assert torch.equal(back["state"][0]["qmap"], qmap) and torch.equal(back["state"][1]["qmap"], qmap)
