"""Stand-ins for real weights: the full-size architectures, built on the ``meta`` device (shapes, no memory),
through the same conversions real checkpoints go through.

- SDXL: a state dict ComfyUI's own model detection calls SDXL → our diffusers config and conversion (0 missing,
  0 unexpected, equal shapes); a rank-8 LoRA on that UNet → our kohya keys → ComfyUI's LoRA key map of the
  real-size SDXL model (every module found); SDXL text conditioning from ComfyUI's real SDXL CLIP configs.
- GroundingDINO Swin-T (OGC) and Swin-B in the original checkpoint layout → our converter (0 missing, 0
  unexpected), and the config read back from the shapes gives the same model.
- SAM vit_b / vit_l / vit_h: tests/test_sam.py (`test_full_size_...`).
"""

import numpy as np
import pytest
import torch
from tiny_models.full_size import LDM, SDXL_LDM_UNET


@pytest.fixture(scope="module")
def sdxl(tiny_models):
    """(ComfyUI's detected model config, the real-size comfy SDXL model on meta)."""
    import comfy.model_base
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SDXL_LDM_UNET, dtype=torch.float16, device="meta", operations=comfy.ops.disable_weight_init)
    state = {LDM + k: v for k, v in unet.state_dict().items()}
    config = comfy.model_detection.model_config_from_unet(state, LDM)
    with torch.device("meta"):
        model = comfy.model_base.SDXL(config, device="meta")
    return config, model


@pytest.fixture(scope="module")
def sdxl_diffusers_unet(sdxl):
    from diffusers import UNet2DConditionModel
    from image_alchemy.training.unet import diffusers_unet_config

    config, _model = sdxl
    with torch.device("meta"):
        return UNet2DConditionModel(**diffusers_unet_config(config.unet_config))


def test_full_size_sdxl_unet_converts_with_nothing_missing(sdxl, sdxl_diffusers_unet):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from image_alchemy.training.unet import diffusers_unet_config

    config, model = sdxl
    assert type(config).__name__ == "SDXL"  # ComfyUI's detection names it, from the shapes alone
    ldm = {LDM + k: v for k, v in model.diffusion_model.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(ldm, diffusers_unet_config(config.unet_config))
    own = sdxl_diffusers_unet.state_dict()
    assert len(ldm) == 1680 and len(own) == 1680
    assert sorted(set(own) - set(converted)) == [] and sorted(set(converted) - set(own)) == []
    assert [k for k in own if own[k].shape != converted[k].shape] == []


def test_full_size_rank_8_lora_maps_every_module_in_comfyui(sdxl, sdxl_diffusers_unet):
    import comfy.lora
    from image_alchemy.training.lora_file import kohya_state_dict
    from image_alchemy.training.settings import TrainSettings
    from image_alchemy.training.trainer import lora_config

    _config, model = sdxl
    unet = sdxl_diffusers_unet
    unet.add_adapter(lora_config(TrainSettings(rank=8)))
    try:
        kohya = kohya_state_dict(unet)
    finally:
        unet.delete_adapters("default")
    modules = {k.split(".lora_down.")[0] for k in kohya if ".lora_down." in k}
    assert len(modules) == 560  # to_q/k/v/out.0 of 140 attention blocks
    assert all(kohya[f"{m}.lora_down.weight"].shape[0] == 8 for m in modules)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    assert sorted(modules - set(key_map)) == []


def test_full_size_sdxl_text_conditioning_shapes(sdxl, monkeypatch):
    import comfy.model_management
    import comfy.sdxl_clip

    _config, model = sdxl
    with torch.device("meta"):  # ComfyUI's SDXL CLIP-L + CLIP-G from their shipped configs
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta", dtype=torch.float16)
    # The encoders run on meta; only ComfyUI's final copy to its intermediate device needs a real device.
    monkeypatch.setattr(comfy.model_management, "intermediate_device", lambda: torch.device("meta"))
    tokens = comfy.sdxl_clip.SDXLTokenizer().tokenize_with_weights("a photo of iklan dog")
    cond, pooled = clip.encode_token_weights(tokens)[:2]
    assert tuple(cond.shape) == (1, 77, 2048) and tuple(pooled.shape) == (1, 1280)
    adm = model.encode_adm(
        pooled_output=torch.zeros(pooled.shape),
        width=1024,
        height=1024,
        crop_w=0,
        crop_h=0,
        target_width=1024,
        target_height=1024,
    )
    assert tuple(adm.shape) == (1, 2816) == (1, model.model_config.unet_config["adm_in_channels"])
    assert cond.shape[-1] == model.model_config.unet_config["context_dim"]


def _grounding_dino(variant: str):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    swin = {  # IDEA-Research's GroundingDINO_SwinT_OGC.py / GroundingDINO_SwinB_cfg.py backbones
        "swint_ogc": SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_indices=[2, 3, 4]
        ),
        "swinb_cogcoor": SwinConfig(
            embed_dim=128,
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            window_size=12,
            image_size=384,
            out_indices=[2, 3, 4],
        ),
    }[variant]
    return GroundingDinoConfig(backbone_config=swin, text_config=BertConfig().to_dict())  # bert-base-uncased


def _hub_layout(model) -> tuple[dict, set]:
    """The keys save_pretrained writes (the hub layout our converter targets: transformers' load-time renames
    reverted, tied box heads once), and every hub name the model accepts (tied copies included)."""
    import re

    from transformers.core_model_loading import revert_weight_conversion

    every = {
        k: v for k, v in revert_weight_conversion(model, dict(model.state_dict())).items() if "position_ids" not in k
    }
    tied = list((getattr(model, "_tied_weights_keys", None) or {}).keys())
    return {k: v for k, v in every.items() if not any(re.match(p + r"\.", k) for p in tied)}, set(every)


@pytest.mark.parametrize("variant", ["swint_ogc", "swinb_cogcoor"])
def test_full_size_grounding_dino_original_layout_converts_with_nothing_missing(variant):
    from image_alchemy.alchemy import grounding
    from tiny_models import detectors as tiny_detectors
    from transformers import GroundingDinoForObjectDetection

    config = _grounding_dino(variant)
    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(config)
    hub, accepted = _hub_layout(model)
    # The released checkpoint's layout (module. prefixes, fused q/k/v, tied box heads, BERT pooler, Swin index
    # buffers), written by the test's own original-name mapping.
    original = {
        f"module.{k}": v
        for k, v in tiny_detectors.to_original_layout(hub, decoder_layers=config.decoder_layers).items()
    }
    assert "module.backbone.0.layers.2.blocks.0.attn.qkv.weight" in original
    converted = grounding.convert_original_state_dict(original)
    assert sorted(set(hub) - set(converted)) == []  # missing
    assert sorted(set(converted) - accepted) == []  # unexpected (the original's tied box-head copies are known)
    shapes = {k: v.shape for k, v in hub.items()}
    assert [k for k in hub if shapes[k] != converted[k].shape] == []
    # The config read back from the shapes builds the same model.
    inferred = grounding.infer_config(original, config.text_config.to_dict())
    for name in ("d_model", "encoder_layers", "decoder_layers", "num_queries", "num_feature_levels"):
        assert getattr(inferred, name) == getattr(config, name), name
    for name in ("embed_dim", "depths", "num_heads", "window_size"):
        assert list(np.atleast_1d(getattr(inferred.backbone_config, name))) == list(
            np.atleast_1d(getattr(config.backbone_config, name))
        ), name
