"""SD1.5 at full size on the ``meta`` device (shapes, no memory), as tests/test_full_size.py does for SDXL: a state
dict ComfyUI's own model detection calls SD15 → the family it is, our diffusers config and conversion (the
handover's key coverage: 0 missing, 0 unexpected, equal shapes); a rank-8 LoRA on it → kohya keys → ComfyUI's
LoRA key map of the real-size SD1.5 (every module found); SD1.5's text conditioning from ComfyUI's real CLIP-L."""

import pytest
import torch
from tiny_models.full_size import LDM, SD15_LDM_UNET


@pytest.fixture(scope="module")
def sd15(tiny_models):
    """(ComfyUI's detected model config, the real-size comfy SD1.5 model on meta)."""
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SD15_LDM_UNET, dtype=torch.float16, device="meta", operations=comfy.ops.disable_weight_init)
    state = {LDM + k: v for k, v in unet.state_dict().items()}
    config = comfy.model_detection.model_config_from_unet(state, LDM)
    with torch.device("meta"):
        model = config.get_model({}, LDM, device="meta")
    return config, model


@pytest.fixture(scope="module")
def family():
    from image_alchemy.training.families import family_named

    return family_named("sd15")


@pytest.fixture(scope="module")
def sd15_diffusers_unet(sd15, family):
    from diffusers import UNet2DConditionModel

    config, _model = sd15
    with torch.device("meta"):
        return UNet2DConditionModel(**family.denoiser_config(config.unet_config))


def test_full_size_sd15_is_recognised_and_converts_with_nothing_missing(sd15, family, sd15_diffusers_unet):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from image_alchemy.training.families import recognise

    config, model = sd15
    assert type(config).__name__ == "SD15"  # ComfyUI's detection names it, from the shapes alone
    assert recognise([c.__name__ for c in type(config).__mro__]) is family
    ldm = {LDM + k: v for k, v in model.diffusion_model.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(ldm, family.denoiser_config(config.unet_config))
    own = sd15_diffusers_unet.state_dict()
    assert len(ldm) == 686 and len(own) == 686
    assert sorted(set(own) - set(converted)) == [] and sorted(set(converted) - set(own)) == []
    assert [k for k in own if own[k].shape != converted[k].shape] == []
    assert sum(p.numel() for p in sd15_diffusers_unet.parameters()) == pytest.approx(family.memory.params, rel=1e-3)


def test_full_size_sd15_rank_8_lora_maps_every_module_in_comfyui(sd15, sd15_diffusers_unet):
    import comfy.lora
    from image_alchemy.training.lora_file import kohya_state_dict
    from image_alchemy.training.settings import TrainSettings
    from image_alchemy.training.trainer import lora_config

    _config, model = sd15
    unet = sd15_diffusers_unet
    unet.add_adapter(lora_config(TrainSettings(rank=8, model_family="sd15")))
    try:
        kohya = kohya_state_dict(unet)
    finally:
        unet.delete_adapters("default")
    modules = {k.split(".lora_down.")[0] for k in kohya if ".lora_down." in k}
    assert len(modules) == 128  # to_q/k/v/out.0 of the 32 attention layers of 16 transformer blocks
    assert all(m.endswith(("_to_q", "_to_k", "_to_v", "_to_out_0")) for m in modules)
    assert all(kohya[f"{m}.lora_down.weight"].shape[0] == 8 for m in modules)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    assert sorted(modules - set(key_map)) == []


def test_full_size_sd15_text_conditioning_shapes(sd15, family, sd15_diffusers_unet, monkeypatch):
    import comfy.model_management
    import comfy.sd1_clip

    _config, model = sd15
    with torch.device("meta"):  # ComfyUI's SD1.5 CLIP-L from its shipped config
        clip = comfy.sd1_clip.SD1ClipModel(device="meta", dtype=torch.float16)
    monkeypatch.setattr(comfy.model_management, "intermediate_device", lambda: torch.device("meta"))
    tokens = comfy.sd1_clip.SD1Tokenizer().tokenize_with_weights("a photo of iklan dog")
    cond, pooled = clip.encode_token_weights(tokens)[:2]
    assert tuple(cond.shape) == (1, 77, 768)
    # What the node hands the trainer (the encoders' outputs copied to the CPU; here zeros of their shapes): 77×768.
    handed = family.text_conditioning(torch.zeros(cond.shape), torch.zeros(pooled.shape))
    assert list(handed) == ["prompt_embeds"] == list(family.conditioning)
    assert handed["prompt_embeds"].shape[-1] == sd15_diffusers_unet.config.cross_attention_dim == 768
    assert family.size_conditioning([]) == {}  # no size / crop conditioning
    assert model.encode_adm(pooled_output=torch.zeros(pooled.shape), width=512, height=512) is None  # no added cond
