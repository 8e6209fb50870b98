"""What TrainSubjectLoRA hands the trainer, checked in-process on ComfyUI's own classes: antialiased photos, crop
conditioning equal to `fit`'s, the MODEL's prediction type and zero-terminal-SNR schedule, refused UNets, class
rows with the noise offset, LoRA names (mixed precision and gradient checkpointing from the machine's answers:
test_training_devices.py)."""

import math

import numpy as np
import pytest
import torch
from image_alchemy.training.objective import Objective
from image_alchemy.training.parametrisation import parametrisation
from image_alchemy.training.schedule import noise_scheduler
from image_alchemy.training.settings import TrainSettings
from PIL import Image


@pytest.fixture(scope="module")
def node(tiny_models):
    """nodes/train.py with ComfyUI importable (CPU)."""
    from image_alchemy.nodes import train, train_checks

    return train, train_checks


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    """The tiny SDXL MODEL, loaded the way the test loader node does."""
    import json

    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(tiny_models["unet"]), safe_load=True, return_metadata=True)
    config = comfy.supported_models.SDXL(json.loads(metadata["tiny_sdxl.unet_config"]))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(sd, "model.diffusion_model.", device=torch.device("cpu"))
    model.load_model_weights(sd, "model.diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def _texture(height: int, width: int) -> torch.Tensor:
    """Fine gratings (periods 2.93 and 3.17 px), above the Nyquist limit of a 1024² training square."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return 0.5 + 0.25 * torch.sin(2 * math.pi * x / 2.93) + 0.25 * torch.sin(2 * math.pi * y / 3.17)


def test_a_phone_size_photo_is_shrunk_without_aliasing(node):
    train, _ = node
    image = _texture(3000, 4000)[None, :, :, None].expand(1, 3000, 4000, 3).contiguous()
    pixels, _masks, _crops = train.prepare_images(image, None, 1024)
    assert pixels.shape == (1, 896, 1152, 3)  # the 4:3 photo's SDXL bucket
    # The gratings cannot be shown at 1024 px: an antialiased filter leaves flat grey, plain bicubic a moiré
    # (pattern spread 0.168 with the former common_upscale(..., "bicubic")).
    assert pixels.std().item() < 0.01
    assert abs(pixels.mean().item() - 0.5) < 0.01


def test_crop_conditioning_is_in_resized_pixels_and_equal_in_node_and_fit(node, tmp_path):
    from image_alchemy.training.fit import load_images

    train, _ = node
    rng = np.random.default_rng(0)
    photo = (rng.uniform(0, 1, (302, 403, 3)) * 255).round().astype(np.uint8)
    (tmp_path / "photos").mkdir()
    Image.fromarray(photo).save(tmp_path / "photos" / "a.png")
    fit_pixels, fit_crops = load_images(str(tmp_path / "photos"), 128)
    fit_ids = [c.time_ids() for c in fit_crops]
    image = torch.from_numpy(photo.astype(np.float32) / 255.0)[None]  # what LoadImage gives the node
    mask = torch.zeros(1, 302, 403)
    mask[:, 100:200, 150:250] = 1
    fit_square, fit_square_crops = load_images(str(tmp_path / "photos"), 96)
    fit_square_ids = [c.time_ids() for c in fit_square_crops]
    pixels, masks, crops = train.prepare_images(image, None, 96)
    time_ids = torch.tensor([c.time_ids() for c in crops])
    # At 96 SDXL's 1152×896 rounds to a square: 302×403 → 96×128, the centre square 16 resized pixels in.
    assert fit_square_ids == [[302, 403, 0, 16, 96, 96]] == time_ids.int().tolist()
    assert torch.allclose(pixels.movedim(-1, 1) * 2 - 1, fit_square, atol=1e-5)
    pixels, masks, crops = train.prepare_images(image, mask, 128)
    time_ids = torch.tensor([c.time_ids() for c in crops])
    # At 128 the 4:3 photo's bucket is 128×160: 302×403 → 128×171, the crop starts 5 resized pixels in (centred
    # on the subject's box, not on 11 original pixels), in resized pixels as SDXL, diffusers and kohya count.
    assert time_ids.int().tolist() == [[302, 403, 0, 5, 128, 160]] and fit_ids[0][4:] == [128, 160]
    # The whole 100×100 subject box is kept: its area scaled by (128/302)², over the 128×160 crop.
    assert masks.shape == (1, 1, 128, 160)
    assert masks.mean().item() == pytest.approx(100 * 100 * (128 / 302) ** 2 / (128 * 160), rel=0.03)
    # The node's 4032×3024 phone photo at 1024: SDXL's 1152×896 bucket, 1195 px wide, cut 21 px in.
    from image_alchemy.training.preprocess import plan_crop

    assert plan_crop(3024, 4032, (896, 1152)).time_ids() == [3024, 4032, 0, 21, 896, 1152]


def test_prediction_type_and_zero_terminal_snr_come_from_the_model_sampling(node, tiny_model):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    _, checks = node
    assert checks.sampling_kind(tiny_model) == ("epsilon", False)
    vpred = ModelSamplingDiscrete().patch(tiny_model, "v_prediction", True)[0]
    assert checks.sampling_kind(vpred) == ("v_prediction", True)
    assert checks.sampling_kind(ModelSamplingDiscrete().patch(tiny_model, "eps", True)[0]) == ("epsilon", True)
    with pytest.raises(ValueError, match=r"TrainSubjectLoRA: the MODEL predicts X0.*eps or v_prediction"):
        checks.sampling_kind(ModelSamplingDiscrete().patch(tiny_model, "x0", False)[0])
    with pytest.raises(ValueError, match=r"predicts LCM"):
        checks.sampling_kind(ModelSamplingDiscrete().patch(tiny_model, "lcm", False)[0])
    import comfy.model_sampling

    class OtherBetas(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    other = tiny_model.clone()
    sampling = OtherBetas(None)  # then re-registered with SD-style linear betas, not SDXL's
    sampling._register_schedule(linear_start=0.0001, linear_end=0.02)
    other.add_object_patch("model_sampling", sampling)
    with pytest.raises(ValueError, match=r"noise schedule .* is not SDXL's"):
        checks.sampling_kind(other)


@pytest.mark.parametrize("zsnr", [False, True])
def test_the_trainer_noises_with_the_schedule_comfyui_samples_with(tiny_model, zsnr):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    sampling = ModelSamplingDiscrete().patch(tiny_model, "v_prediction", zsnr)[0].get_model_object("model_sampling")
    comfy_alphas = 1 / (sampling.sigmas.double() ** 2 + 1)  # ᾱ_t from ComfyUI's sigmas
    ours = noise_scheduler(TrainSettings(prediction_type="v_prediction", zero_terminal_snr=zsnr)).alphas_cumprod
    assert torch.allclose(ours[:-1].double(), comfy_alphas[:-1], rtol=1e-4, atol=1e-7)
    # ᾱ at t = 500: 0.276 on SDXL's schedule, 0.241 rescaled to zero terminal SNR (more noise at every t).
    assert ours[500].item() == pytest.approx(0.241 if zsnr else 0.276, abs=5e-4)
    assert (ours[-1].item() == 0.0) == zsnr


def test_a_v_prediction_model_trains_against_the_v_target():
    from image_alchemy.training.objective import noised

    settings = TrainSettings(prediction_type="v_prediction", zero_terminal_snr=True)
    scheduler = noise_scheduler(settings)
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 500, 999])
    noisy, target = noised(latents, noise, t, parametrisation(settings))
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(target, a.sqrt() * noise - (1 - a).sqrt() * latents, atol=1e-5)  # v = √ᾱ·ε − √(1−ᾱ)·x₀
    assert torch.allclose(noisy[2], noise[2], atol=1e-6)  # zero terminal SNR: pure noise at t = 999
    assert torch.equal(noised(latents, noise, t, parametrisation(TrainSettings()))[1], noise)  # ε models: the noise


def test_defaults_follow_diffusers_sdxl_dreambooth_lora_run(comfy):
    """batch 1 × gradient accumulation 4 (diffusers' documented SDXL DreamBooth LoRA command); checkpointing auto."""
    spec = comfy.object_info()["ImageAlchemy_TrainSubjectLoRA"]["input"]
    assert spec["required"]["batch_size"][1]["default"] == 1
    assert spec["optional"]["gradient_accumulation"][1]["default"] == 4 == TrainSettings().gradient_accumulation
    assert spec["required"]["gradient_checkpointing"][1]["default"] == "auto"


@pytest.mark.parametrize(
    "variant, message",
    [
        ("inpaint", r"9 input channels.*an inpainting model"),
        ("instruct-pix2pix", r"8 input channels.*instruct-pix2pix"),
        ("scaled fp8", r"scaled-fp8 checkpoint.*fp16/bf16 version"),
    ],
)
def test_untrainable_unets_are_refused_before_anything_is_encoded(comfy, variant, message):
    from comfy_execution.graph_utils import GraphBuilder
    from support.reliability_helpers import expect_error, shaped_image

    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    odd = g.node("ImageAlchemyTest_TinySDXLVariant", variant=variant)
    g.node(
        "ImageAlchemy_TrainSubjectLoRA",
        model=odd.out(0),
        clip=loader.out(1),
        vae=loader.out(2),
        images=shaped_image(g, batch=2),
        token="iklan",
        class_word="disc",
        lora_name="inputs_never",
        steps=2,
        learning_rate=1e-3,
        rank=2,
        alpha=0.0,
        batch_size=2,
        resolution=64,
        seed=0,
        mixed_precision="no",
        gradient_checkpointing="off",
        flip=False,
        noise_offset=0.0,
    )
    before = sorted((comfy.base_dir / "temp").rglob("*"))
    expect_error(comfy, g.finalize(), r"TrainSubjectLoRA: .*" + message)
    assert sorted((comfy.base_dir / "temp").rglob("*")) == before  # no UNet export, no job folder


def test_class_rows_get_the_noise_offset_too():
    """Prior preservation noises the class images with the same function as the subject: offset included."""
    settings = TrainSettings(noise_offset=5.0, prior_images=4, device="cpu")
    tensors = {
        "class_latents": torch.zeros(4, 4, 8, 8),
        "class_prompt_embeds": torch.zeros(1, 77, 64),
        "class_pooled_prompt_embeds": torch.zeros(1, 32),
        "class_time_ids": torch.zeros(1, 6),
    }
    objective = Objective(None, settings, tensors, torch.Generator().manual_seed(0))
    batch = objective.class_batch(64, torch.float32)
    # ε target = the noise itself: an offset of 5 per sample and channel shows as a spread of channel means ≈ 5.
    channel_means = batch.target.mean(dim=(2, 3))
    assert channel_means.std().item() > 3.0
    plain = Objective(None, TrainSettings(prior_images=4, device="cpu"), tensors, torch.Generator().manual_seed(0))
    plain = plain.class_batch(64, torch.float32)
    assert plain.target.mean(dim=(2, 3)).std().item() < 0.5


@pytest.mark.parametrize("name", ["my dög lora", "iklan_dog", "Персонаж/мой пёс", "犬のLoRA", "v1.2-final"])
def test_lora_names_with_letters_of_any_script_are_accepted(node, name):
    _, checks = node
    assert checks.lora_file_name(name) == name + ".safetensors"
    assert checks.lora_file_name(name + ".safetensors") == name + ".safetensors"


@pytest.mark.parametrize(
    "name",
    [
        "../up",
        "a/../b",
        "/abs",
        "C:/x",
        "a\\b",
        "a;b",
        "x\ny",
        "CON",
        "nul.v2",
        ".hidden",
        "a/",
        "trail.",
        "a<b>",
        "pipe|d",
        "q?",
        "star*",
        "emoji🐶",
    ],
)
def test_unsafe_lora_names_are_still_refused(node, name):
    _, checks = node
    with pytest.raises(ValueError, match=r"TrainSubjectLoRA: lora_name .* is not a safe file name"):
        checks.lora_file_name(name)
