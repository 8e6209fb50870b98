"""The trainer out of the graph: UNet conversion, settings/CLI checks, `python -m training run`, determinism."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_alchemy.training import cli, job
from image_alchemy.training.lora_file import read_metadata
from image_alchemy.training.objective import compute_loss
from image_alchemy.training.plot import loss_curve_image
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.unet import diffusers_unet_config, load_ldm_unet
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_models.pipeline import encode_subject_data

ROOT = Path(__file__).resolve().parent.parent
# ComfyUI's detected unet_config for SDXL base 1.0 and the diffusers config it ships with.
SDXL_COMFY = {
    "model_channels": 320,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
    "context_dim": 2048,
    "num_head_channels": 64,
    "adm_in_channels": 2816,
    "use_linear_in_transformer": True,
    "in_channels": 4,
    "out_channels": 4,
}


@pytest.fixture(scope="module")
def subject_128(pipeline_dir):
    """The synthetic subject encoded at 128 px (16×16 latents), flipped views and masks included."""
    return encode_subject_data(
        pipeline_dir, TrainSettings(token="iklan", class_word="disc", flip=True), size=128, with_masks=True
    )


def test_sdxl_config_maps_to_diffusers_sdxl_config():
    config = diffusers_unet_config(SDXL_COMFY)
    assert config["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert config["block_out_channels"] == [320, 640, 1280] and config["layers_per_block"] == 2
    assert config["transformer_layers_per_block"] == [1, 2, 10] and config["attention_head_dim"] == [5, 10, 20]
    assert (
        config["projection_class_embeddings_input_dim"] == 2816 and "reverse_transformer_layers_per_block" not in config
    )
    with pytest.raises(ValueError, match="transformer_depth_middle"):
        diffusers_unet_config({**SDXL_COMFY, "transformer_depth_middle": 1})


def test_converted_unet_predicts_what_comfyui_predicts(tiny_models, unet_file):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from tiny_models.factory import TINY_UNET_CONFIG, UNET_PREFIX

    sd = load_file(str(tiny_models["unet"]))
    comfy_unet = UNetModel(
        **TINY_UNET_CONFIG, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init
    )
    comfy_unet.load_state_dict({k[len(UNET_PREFIX) :]: v for k, v in sd.items()})
    ours, _config, model_hash = load_ldm_unet(unet_file)
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 64, generator=gen)
    pooled, time_ids, t = (
        torch.randn(2, 32, generator=gen),
        torch.tensor([[256.0, 256, 0, 0, 256, 256]] * 2),
        torch.tensor([10, 700]),
    )
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

    adm = torch.cat([pooled] + [timestep_embedding(time_ids[:, i], 256) for i in range(6)], dim=1)
    with torch.no_grad():
        expected = comfy_unet(x, t, context=context, y=adm)
        got = ours(x, t, context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert (got - expected).abs().max() < 1e-4 and len(model_hash) == 64


def test_settings_and_command_line_checks(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision bf16 needs a GPU"):
        TrainSettings(mixed_precision="bf16", device="cpu").validate()
    with pytest.raises(ValueError, match="token must be one word"):
        TrainSettings(token="two words").validate()
    assert TrainSettings(rank=16).lora_alpha == 16.0 and TrainSettings(rank=16, alpha=4).lora_alpha == 4.0
    base = ["fit", "--model", "m", "--images", str(tmp_path), "--token", "iklan", "--class-word", "dog"]
    with pytest.raises(SystemExit):
        cli.parse_args(base + ["--out", "x.ckpt"])
    with pytest.raises(SystemExit):
        cli.parse_args(base + ["--out", "x.safetensors", "--mixed-precision", "fp16", "--device", "cpu"])
    args = cli.parse_args(base + ["--out", "x.safetensors", "--rank", "4", "--flip", "--steps", "7"])
    assert args.settings == TrainSettings(token="iklan", class_word="dog", rank=4, flip=True, steps=7)
    help_text = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--rank",
        "--alpha",
        "--learning-rate",
        "--steps",
        "--batch-size",
        "--resolution",
        "--seed",
        "--mixed-precision",
        "--gradient-checkpointing",
        "--flip",
        "--noise-offset",
    ):
        assert option in help_text


def test_masked_loss_weights_the_subject_and_keeps_room_for_terms():
    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    weights = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert compute_loss(pred, target)[0].item() == pytest.approx(0.25)
    assert compute_loss(pred, target, weights)[0].item() == pytest.approx(1.0)
    total, terms = compute_loss(pred, target, None, drift=torch.tensor(0.5))
    assert total.item() == pytest.approx(0.75) and terms == {"denoise": 0.25, "drift": 0.5}


def test_run_command_streams_json_progress_and_writes_kohya_lora(subject_128, unet_file, tmp_path):
    settings = TrainSettings(
        token="iklan", class_word="disc", steps=2, batch_size=2, rank=4, device="cpu", gradient_accumulation=1
    )
    data = subject_128
    out = tmp_path / "loras" / "run.safetensors"
    job.write_job(
        tmp_path / "job",
        settings,
        data,
        unet_path=unet_file,
        output=out,
        extra_metadata={"image_alchemy.job_hash": "abc"},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "training", "run", str(tmp_path / "job")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["step"] for e in events[:-1]] == [1, 2] and events[-1]["done"] and events[-1]["output"] == str(out)
    assert all({"loss", "lr", "eta_s", "steps"} <= set(e) for e in events[:-1])
    with safe_open(str(out), framework="pt") as f:
        keys = list(f.keys())
        alpha = f.get_tensor(next(k for k in keys if k.endswith(".alpha")))
    assert sum(k.endswith(".lora_down.weight") for k in keys) == 32 == sum(k.endswith(".alpha") for k in keys)
    assert all(k.startswith("lora_unet_") for k in keys) and alpha.item() == 4.0
    meta = read_metadata(out)
    assert meta["image_alchemy.class_word"] == "disc" and meta["image_alchemy.job_hash"] == "abc"
    assert json.loads(meta["image_alchemy.settings"])["rank"] == 4 and len(meta["image_alchemy.base_model_hash"]) == 64
    assert not list(out.parent.glob("*.partial"))
    bad = subprocess.run(
        [sys.executable, "-m", "training", "run", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1 and "not a training job folder" in json.loads(bad.stdout.splitlines()[-1])["error"]


def test_same_seed_gives_the_same_lora_bytes_on_cpu(subject_128, unet_file, tmp_path):
    def train(seed, name):
        settings = TrainSettings(
            token="iklan",
            class_word="disc",
            steps=3,
            batch_size=2,
            rank=2,
            seed=seed,
            flip=True,
            noise_offset=0.05,
            device="cpu",
        )
        job.write_job(
            tmp_path / name, settings, subject_128, unet_path=unet_file, output=tmp_path / name / "subject.safetensors"
        )
        return job.run_job(tmp_path / name).read_bytes()

    first, again, other = train(1, "a"), train(1, "b"), train(2, "c")
    assert first == again  # the whole file: header (sorted keys and metadata) and data
    size = int.from_bytes(first[:8], "little")
    assert first[8 + size :] != other[8 + size :]
    assert load_file(str(tmp_path / "a" / "subject.safetensors")).keys() == json.loads(first[8 : 8 + size]).keys() - {
        "__metadata__"
    }


def test_gradient_accumulation_runs_micro_batches_per_step_and_logs_their_mean(subject_128, unet_file):
    from image_alchemy.training.trainer import train

    unet, _config, _hash = load_ldm_unet(unet_file)
    calls = []
    unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    settings = TrainSettings(
        token="iklan",
        class_word="disc",
        steps=2,
        batch_size=1,
        gradient_accumulation=3,
        rank=2,
        device="cpu",
        flip=True,
    )
    events = []
    result = train(unet, subject_128, settings, events.append)
    assert calls == [1] * 6  # 2 optimizer steps × 3 micro-batches of one image
    assert len(result.losses) == 2 == len(events) and [e["step"] for e in events] == [1, 2]


def test_loss_curve_image():
    img = loss_curve_image([1.0, 0.8, 0.9, 0.5, 0.4])
    assert img.shape == (256, 512, 3) and img.dtype.name == "float32" and img.min() < 0.5 <= img.max() <= 1.0
    assert loss_curve_image([]).shape == (256, 512, 3)
    # One step (or a flat loss) still draws its line across the chart.
    for losses in ([0.42], [0.3, 0.3, 0.3]):
        img = loss_curve_image(losses)
        assert ((img[..., 2] > 0.6) & (img[..., 0] < 0.3)).sum() > 200
