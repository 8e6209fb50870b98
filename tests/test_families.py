"""The model-family seam (training/families, training/parametrisation.py) as plain functions: each objective
against an independent formula on given tensors, the families' declarations and how a model is told apart."""

import math

import pytest
import torch
from image_alchemy.training.families import FAMILIES, family_named, family_of_file, recognise
from image_alchemy.training.hardware import Machine
from image_alchemy.training.objective import draw_noise, noised
from image_alchemy.training.parametrisation import DiscreteDiffusion, FlowMatching, parametrisation
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.user_values import from_user_values


def _alphas_cumprod(zero_terminal_snr: bool) -> torch.Tensor:
    """ᾱ_t of the scaled-linear schedule (β from √0.00085 to √0.012, squared), written out; with zero terminal
    SNR rescaled as Lin et al. 2024, Algorithm 1 (√ᾱ shifted to 0 at T and scaled to keep √ᾱ_0)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_bar = torch.cumprod(1 - betas, 0)
    if zero_terminal_snr:
        root = alphas_bar.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)
        alphas_bar = root**2
    return alphas_bar


@pytest.fixture
def tensors():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 4, 8, 8, generator=gen)


def test_epsilon_objective_matches_the_ddpm_forward_process(tensors):
    latents, noise = tensors
    t = torch.tensor([0, 250, 500, 999])
    noisy, target = noised(latents, noise, t, parametrisation(TrainSettings()))
    a = _alphas_cumprod(False)[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(noisy, a.sqrt() * latents + (1 - a).sqrt() * noise, atol=1e-5)  # x_t = √ᾱ x₀ + √(1−ᾱ) ε
    assert torch.equal(target, noise)


def test_v_objective_with_zero_terminal_snr_matches_its_formula(tensors):
    latents, noise = tensors
    t = torch.tensor([0, 250, 500, 999])
    settings = TrainSettings(prediction_type="v_prediction", zero_terminal_snr=True)
    noisy, target = noised(latents, noise, t, parametrisation(settings))
    a = _alphas_cumprod(True)[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(noisy, a.sqrt() * latents + (1 - a).sqrt() * noise, atol=1e-5)
    assert torch.allclose(target, a.sqrt() * noise - (1 - a).sqrt() * latents, atol=1e-5)  # v = √ᾱ ε − √(1−ᾱ) x₀
    assert torch.allclose(target[3], -latents[3], atol=1e-6)  # SNR 0 at t = 999: pure noise in, v = −x₀


@pytest.mark.parametrize("shift", [1.0, 3.0, 1.15])
def test_flow_objective_with_shift_matches_rectified_flow(tensors, shift):
    latents, noise = tensors
    settings = TrainSettings(prediction_type="flow", flow_shift=shift)
    flow = parametrisation(settings)
    assert isinstance(flow, FlowMatching)
    gen, again = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    t = flow.timesteps(4, gen)
    u = torch.rand(4, generator=again, dtype=torch.float64)
    sigma = shift * u / (1 + (shift - 1) * u)  # SD3 / FLUX.1 timestep shift (ComfyUI's time_snr_shift)
    assert torch.allclose(t.double() / 1000, sigma, atol=1e-6)
    noisy, target = noised(latents, noise, t, flow)
    s = sigma.float().view(-1, 1, 1, 1)
    assert torch.allclose(noisy, (1 - s) * latents + s * noise, atol=1e-5)
    assert torch.allclose(target, noise - latents, atol=1e-6)


def test_flow_shift_pushes_timesteps_to_more_noise():
    u = torch.linspace(0.05, 0.95, 19)
    assert torch.all(FlowMatching(3.0).sigmas(u) > u) and torch.equal(FlowMatching(1.0).sigmas(u), u)
    with pytest.raises(ValueError, match="flow shift must be > 0"):
        FlowMatching(0.0)
    with pytest.raises(ValueError, match="flow_shift must be > 0"):
        TrainSettings(prediction_type="flow", flow_shift=-1.0).validate()
    # The UNet families do not predict a flow: refused before training, with what to use.
    with pytest.raises(ValueError, match=r"prediction_type flow is not how SD1.5 models predict.*epsilon"):
        TrainSettings(prediction_type="flow", model_family="sd15").validate()


def test_discrete_draws_are_the_trainers_former_draws():
    """Noise first, then timesteps uniform in 0..999 from the same generator: a seed trains as before."""
    settings = TrainSettings(noise_offset=0.05)
    got = draw_noise(
        torch.Size([3, 4, 8, 8]), DiscreteDiffusion(settings), settings, torch.Generator().manual_seed(5), "cpu"
    )
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(3, 4, 8, 8, generator=gen)
    noise = noise + 0.05 * torch.randn(3, 4, 1, 1, generator=gen)
    assert torch.equal(got[0], noise)
    assert torch.equal(got[1], torch.randint(0, 1000, (3,), generator=gen))


def test_each_family_declares_the_whole_contract():
    for family in FAMILIES.values():
        assert family.conditioning[0] == "prompt_embeds"
        assert family.lora_targets == ("to_q", "to_k", "to_v", "to_out.0")  # attention projections (paper 001 §3.2)
        assert set(family.predictions) <= {"epsilon", "v_prediction", "flow"}
        assert all(w * h <= family.native_resolution**2 for w, h in family.buckets)
        assert all(w % family.bucket_multiple == 0 and h % family.bucket_multiple == 0 for w, h in family.buckets)
        assert family.lora_metadata()["image_alchemy.model_family"] == family.name
    sdxl, sd15 = family_named("sdxl"), family_named("sd15")
    assert sdxl.lora_metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    assert sd15.lora_metadata()["ss_base_model_version"] == "sd_v1"
    assert sdxl.conditioning == ("prompt_embeds", "pooled_prompt_embeds", "time_ids") and sd15.conditioning == (
        "prompt_embeds",
    )
    with pytest.raises(ValueError, match="unknown model family 'flux'"):
        family_named("flux")


def test_a_model_is_told_by_its_comfyui_config_classes():
    # ComfyUI's model-config class names, most derived first (e.g. SSD-1B and Pony-style finetunes are SDXL).
    assert recognise(["SSD1B", "SDXL", "BASE", "object"]) is family_named("sdxl")
    assert recognise(["SD15", "BASE", "object"]) is family_named("sd15")
    assert recognise(["SDXLRefiner", "BASE", "object"]) is None
    assert recognise(["Flux", "BASE", "object"]) is None


def test_a_checkpoint_file_is_told_by_its_keys(tmp_path):
    from safetensors.torch import save_file

    def write(name, *keys):
        save_file({k: torch.zeros(1) for k in keys}, tmp_path / name)

    write("a.sft", "model.diffusion_model.x", "cond_stage_model.transformer.text_model.y")
    write("b.sft", "model.diffusion_model.x", "conditioner.embedders.1.model.y")
    write("c.sft", "model.diffusion_model.x")
    assert family_of_file(tmp_path / "a.sft") is family_named("sd15")
    assert family_of_file(tmp_path / "b.sft") is family_named("sdxl")
    with pytest.raises(ValueError, match="not a model of a family the trainer knows.*SDXL, SD1.5"):
        family_of_file(tmp_path / "c.sft")


def test_resolution_0_trains_at_the_familys_native_size_and_the_memory_estimate_follows_it():
    values = {"token": "iklan", "class_word": "dog", "resolution": 0, "gradient_checkpointing": "auto"}
    common = dict(machine=Machine("cuda", bf16=True, fp16=True, autocast=True, available_bytes=6 * 2**30))
    sd15 = from_user_values(values, model_family="sd15", **common)
    sdxl = from_user_values(values, model_family="sdxl", **common)
    assert sd15.resolution is None and sd15.training_resolution == 512 and sdxl.training_resolution == 1024
    # 6 GiB free: SD1.5 at 512² fits without checkpointing (1.6 GiB bf16 weights + 1.66 + 1.5 = 4.8 GiB), SDXL at
    # 1024² does not (4.8 + 7.3 + 1.5 = 13.6 GiB).
    assert sd15.gradient_checkpointing is False and sdxl.gradient_checkpointing is True
    assert math.isclose(family_named("sd15").memory.params, 8.595e8, rel_tol=1e-3)
