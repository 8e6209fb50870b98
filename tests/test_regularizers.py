"""Drift-free training formulas on numbers worked out by hand (a wrong sign or constant fails), and the UNet
probes on the tiny SDXL-architecture UNet: the r×r penalty equals the naive ‖s·B·A‖²_F on the real LoRA
layers, the base pass is the same UNet with the adapter off, the hooks see every block and cross-attention."""

import math

import pytest
import torch
from image_alchemy.training import augment
from image_alchemy.training import regularizers as reg
from image_alchemy.training.lora_hooks import FeatureProbe, adapter_disabled, lora_factors, lora_parameters
from image_alchemy.training.objective import compute_loss
from image_alchemy.training.settings import TrainSettings
from image_alchemy.training.trainer import build_lora_unet


def test_delta_penalty_by_hand_and_equal_to_naive_frobenius():
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # r=2 × d_in=3
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # d_out=2 × r=2
    # B·A = [[1, 1, 2], [0, 2, 0]] → ‖BA‖²_F = 1+1+4+0+4+0 = 10; s = 0.5 → 0.25·10
    assert reg.drift_penalty_delta([(a, b, 0.5)]).item() == pytest.approx(2.5)
    assert reg.drift_penalty_delta([(a, b, 0.5), (a, 2 * b, 1.0)]).item() == pytest.approx(2.5 + 40.0)
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(4, 40, generator=gen), torch.randn(30, 4, generator=gen), 0.7) for _ in range(3)]
    naive = sum((s * bb @ aa).pow(2).sum() for aa, bb, s in pairs)
    assert reg.drift_penalty_delta(pairs).item() == pytest.approx(naive.item(), rel=1e-5)
    with pytest.raises(ValueError, match="no LoRA layers"):
        reg.drift_penalty_delta([])


def test_params_penalty_by_hand():
    # A = [1, 2], B = [3, 4]ᵀ → 1 + 4 + 9 + 16
    assert reg.drift_penalty_params([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [4.0]])]).item() == 30.0


def test_timestep_bins_are_ten_bins_of_one_hundred():
    t = torch.tensor([0, 99, 100, 150, 999, 500])
    assert reg.timestep_bins(t).tolist() == [0, 0, 1, 1, 9, 5]


def test_gamma_from_emas_by_hand():
    # γ = 1 − exp(−1000·(EMA_pre − EMA_ft)), clipped to [0, 1]
    assert reg.gamma_value(0.101, 0.100) == pytest.approx(1 - math.exp(-1.0), rel=1e-6)  # 0.63212
    assert reg.gamma_value(0.103, 0.100) == pytest.approx(1 - math.exp(-3.0), rel=1e-6)  # 0.95021
    assert reg.gamma_value(0.100, 0.101) == 0.0  # fine-tuned loss above base: not overfitting
    assert reg.gamma_value(0.5, 0.4) == pytest.approx(1.0)


def test_indicator_emas_weights_and_augmentation_probability_per_bin():
    ind = reg.OverfitIndicator()
    ind.update(torch.tensor([150]), torch.tensor([0.5]), torch.tensor([0.5]))  # first sight: EMAs = values
    assert ind.gamma()[1].item() == 0.0
    ind.update(torch.tensor([120]), torch.tensor([0.5]), torch.tensor([0.49]))
    # EMA_ft = 0.5 + 0.1·(0.49 − 0.5) = 0.499; EMA_pre stays 0.5 → γ_1 = 1 − e^(−1000·0.001) = 0.63212
    assert ind.ema_ft[1].item() == pytest.approx(0.499) and ind.ema_pre[1].item() == pytest.approx(0.5)
    gamma = 1 - math.exp(-1.0)
    assert ind.gamma()[1].item() == pytest.approx(gamma, rel=1e-6)
    t = torch.tensor([110, 750])  # bin 1, bin 7 (never seen: γ = 0)
    assert ind.loss_weights(t).tolist() == pytest.approx([1 - gamma, 1.0], rel=1e-6)  # 0.36788, 1
    assert ind.augment_probability(t, p_max=0.5).tolist() == pytest.approx([0.5, 0.0])
    assert ind.augment_probability(t, p_max=0.9).tolist() == pytest.approx([gamma, 0.0], rel=1e-6)
    # Two samples of one bin count as one observation: their mean (0.5 vs 0.4 → γ ≈ 1).
    ind.update(torch.tensor([950, 960]), torch.tensor([0.4, 0.6]), torch.tensor([0.3, 0.5]))
    assert ind.ema_pre[9].item() == pytest.approx(0.5) and ind.ema_ft[9].item() == pytest.approx(0.4)
    assert ind.gamma()[9].item() == pytest.approx(1.0) and ind.loss_weights(torch.tensor([999])).item() < 1e-6


def test_loss_with_per_sample_weights_by_hand():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])  # row errors 1 and 4
    total, terms = compute_loss(pred, target, sample_weights=torch.tensor([0.5, 0.25]), drift=torch.tensor(0.1))
    assert total.item() == pytest.approx((0.5 * 1 + 0.25 * 4) / 2 + 0.1) and terms["denoise"] == pytest.approx(0.75)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    assert reg.per_sample_loss(pred, target, mask).tolist() == pytest.approx([1.0, 4.0])
    assert reg.per_sample_loss(pred, target * torch.tensor([1.0, 0, 0, 0]).view(1, 1, 2, 2)).tolist() == [0.25, 1.0]


def test_feature_statistics_loss_by_hand():
    tuned = torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]])  # mean 5, std √5
    base = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # mean 4, std √5
    mean, std = reg.channel_stats(base)
    assert mean.item() == pytest.approx(4.0) and std.item() == pytest.approx(math.sqrt(5.0))
    assert reg.feature_stats_loss([reg.channel_stats(tuned)], [reg.channel_stats(base)]).item() == pytest.approx(1.0)
    wider = tuned * 2 - 5  # mean 5, std 2√5 → (5−4)² + (2√5 − √5)² = 1 + 5
    assert reg.feature_stats_loss([reg.channel_stats(wider)], [reg.channel_stats(base)]).item() == pytest.approx(6.0)


def test_attention_maps_and_alignment_by_hand():
    q = torch.tensor([[[1.0, 0.0]]])  # B=1, one query, one head of width 2
    k = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # two text tokens: scores 0 and 2·0.5 = 1
    probs = reg.attention_probs(q, k, heads=1, scale=0.5)
    assert probs.shape == (1, 1, 1, 2)
    assert probs.flatten().tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])  # 0.26894, 0.73106
    tuned, base = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[0.5, 0.5]]]])
    assert reg.attention_alignment_loss([tuned], [base]).item() == pytest.approx(0.5)  # 0.25 + 0.25
    assert reg.attention_alignment_loss([tuned, base], [base, base]).item() == pytest.approx(0.25)


def test_augmentation_ranges_order_and_geometry():
    theta = augment.random_transforms(400, torch.Generator().manual_seed(0))
    zoom, angle = augment.zoom_of(theta), augment.angle_of(theta)
    assert 1.0 <= zoom.min() and zoom.max() <= 3.0 and zoom.max() > 2.5 and zoom.min() < 1.5
    assert -15.0 <= angle.min() < -12 and 12 < angle.max() <= 15.0
    # A zoom-out of 2 about the centre puts the picture in the middle half; the mask margin is empty.
    ones = torch.ones(1, 1, 8, 8)
    half = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    out = augment.apply_transforms(ones, half, padding="zeros")
    assert out[0, 0, 3:5, 3:5].min() == 1.0 and out[0, 0, 0].max() == 0.0
    assert torch.equal(augment.apply_transforms(ones, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])), ones)
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    views, masks = augment.augmented_views(pixels, 3, seed=5, masks=torch.ones(2, 1, 16, 16))
    again, _ = augment.augmented_views(pixels, 3, seed=5)
    assert views.shape == (6, 3, 16, 16) and masks.shape == (6, 1, 16, 16) and torch.equal(views, again)
    # image-major: views 0–2 come from image 0, 3–5 from image 1 (border padding keeps a flat image flat)
    flat, _ = augment.augmented_views(torch.stack([torch.ones(3, 16, 16), torch.zeros(3, 16, 16)]), 3, seed=5)
    assert flat[:3].min() > 0.999 and flat[3:].abs().max() < 1e-6


@pytest.fixture(scope="module")
def lora_unet(tiny_models):
    """The tiny UNet with a rank-2 LoRA whose B is non-zero (peft starts B at 0)."""
    import json

    from image_alchemy.training.unet import diffusers_unet_config, unet_from_ldm
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(tiny_models["unet"]), framework="pt") as f:
        config = diffusers_unet_config(json.loads(f.metadata()["tiny_sdxl.unet_config"]))
    base = unet_from_ldm(load_file(str(tiny_models["unet"])), config)
    unet = unet_from_ldm(load_file(str(tiny_models["unet"])), config)
    unet = build_lora_unet(unet, TrainSettings(rank=2, alpha=1.0, device="cpu"), torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _a, b, _s in lora_factors(unet):
            b.copy_(torch.randn(b.shape, generator=gen) * 0.5)
    return base.eval(), unet


def _inputs(n=2, size=8):
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, 4, size, size, generator=gen),
        torch.tensor([100, 800][:n]),
        torch.randn(n, 77, 64, generator=gen),
        {"text_embeds": torch.randn(n, 32, generator=gen), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * n)},
    )


def test_penalty_on_real_lora_layers_matches_naive_delta_w(lora_unet):
    _base, unet = lora_unet
    factors = lora_factors(unet)
    assert len(factors) == 32 and all(s == 0.5 for *_x, s in factors)  # alpha/rank = 1/2
    naive = sum((s * b @ a).pow(2).sum() for a, b, s in factors)  # d_out × d_in ΔW per layer
    assert reg.drift_penalty_delta(factors).item() == pytest.approx(naive.item(), rel=1e-5)
    assert len(lora_parameters(unet)) == 64
    # the penalty's gradient reaches every LoRA parameter
    reg.drift_penalty_delta(factors).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(unet))
    unet.zero_grad(set_to_none=True)


def test_base_pass_is_the_same_unet_with_the_adapter_off(lora_unet):
    base, unet = lora_unet
    x, t, ctx, added = _inputs()
    with torch.no_grad():
        reference = base(x, t, ctx, added_cond_kwargs=added).sample
        tuned = unet(x, t, ctx, added_cond_kwargs=added).sample
        with adapter_disabled(unet):
            off = unet(x, t, ctx, added_cond_kwargs=added).sample
        on_again = unet(x, t, ctx, added_cond_kwargs=added).sample
    assert torch.allclose(off, reference, atol=1e-5) and (tuned - reference).abs().mean() > 1e-3
    assert torch.equal(on_again, tuned) and all(p.requires_grad for p in lora_parameters(unet))


def test_probe_records_blocks_and_cross_attention_and_compares_with_the_base(lora_unet):
    _base, unet = lora_unet
    probe = FeatureProbe(unet, features=True, attention=True)
    x, t, ctx, added = _inputs()
    try:
        with torch.no_grad():
            with adapter_disabled(unet), probe.record():
                unet(x, t, ctx, added_cond_kwargs=added)
            base_stats, base_maps = probe.rows(2)
            with adapter_disabled(unet), probe.record():
                unet(x, t, ctx, added_cond_kwargs=added)
            same_stats, same_maps = probe.rows(2)
            with probe.record():
                unet(x, t, ctx, added_cond_kwargs=added)
            tuned_stats, tuned_maps = probe.rows(1)
        unet(x, t, ctx, added_cond_kwargs=added)  # inactive: records nothing
    finally:
        probe.remove()
    assert len(base_stats) == 2 + 1 + 2  # down blocks, middle, up blocks of the tiny UNet
    assert len(base_maps) == 4  # transformer blocks: down level 2, middle, up level 2 (×2)
    assert base_maps[0].shape[:2] == (2, 8) and base_maps[0].shape[-1] == 77  # heads = 64 channels / 8
    assert torch.allclose(base_maps[0].sum(-1), torch.ones(()), atol=1e-5)
    assert reg.feature_stats_loss(same_stats, base_stats).item() == 0.0
    assert reg.attention_alignment_loss(same_maps, base_maps).item() == 0.0
    assert tuned_stats[0][0].shape[0] == 1 and len(probe.stats) == 5  # rows(1) slices; inactive added nothing
    one = [(m[:1], s[:1]) for m, s in base_stats]
    assert reg.feature_stats_loss(tuned_stats, one).item() > 0
    assert reg.attention_alignment_loss(tuned_maps, [m[:1] for m in base_maps]).item() > 0
