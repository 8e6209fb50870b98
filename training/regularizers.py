"""Drift-free training terms as plain torch functions (docs/DESIGN.md §4.3; papers 002 and 003).

- Drift penalty (paper 002; docs/DESIGN.md §4.3.2): ``delta`` R = Σ_layers ‖s·B·A‖²_F, as s²·trace((BᵀB)(AAᵀ)) in r×r;
  ``params`` R = Σ ‖p‖² over the LoRA parameters (what the paper's SDXL LoRA script does).
- APT (paper 003; docs/DESIGN.md §4.3.3): the per-timestep-bin overfitting indicator γ_b from EMAs of base and tuned
  losses, the augmentation probability clip(γ, 0, p_max), the loss weight 1 − γ, representation
  stabilization (channel-wise mean/std of feature maps vs the base model) and attention alignment
  (cross-attention maps vs the base model).
Nothing here knows about the UNet; ``training/lora_hooks.py`` collects the tensors these functions take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

APT_BINS = 10  # timestep bins of the indicator (paper 003; docs/DESIGN.md §4.3.3)
APT_EMA = 0.1  # EMA rate α: EMA ← (1 − α)·EMA + α·loss
APT_TEMPERATURE = 1000.0  # T in γ_b = 1 − exp(−T·(EMA_b[L_pre] − EMA_b[L_ft]))
NUM_TRAIN_TIMESTEPS = 1000


def drift_penalty_delta(pairs: Iterable[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """Σ ‖s·B·A‖²_F over LoRA layers given as (A: r×d_in, B: d_out×r, s). ‖BA‖²_F = trace(AᵀBᵀBA) =
    trace((BᵀB)(AAᵀ)), and for two symmetric matrices trace(XY) = Σ X∘Y: r×r work, never d_out×d_in."""
    total = None
    for a, b, scale in pairs:
        a, b = a.float(), b.float()
        term = (scale * scale) * ((b.T @ b) * (a @ a.T)).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("drift penalty: the model has no LoRA layers")
    return total


def drift_penalty_params(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ ‖p‖² over the LoRA parameters (A and B alike): the paper's official SDXL LoRA regularizer."""
    terms = [p.float().pow(2).sum() for p in params]
    if not terms:
        raise ValueError("drift penalty: the model has no LoRA parameters")
    return torch.stack(terms).sum()


def per_sample_loss(
    model_pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Denoising MSE per batch row (weighted mean over latent pixels when ``weights`` is given): shape (B,)."""
    error = (model_pred.float() - target.float()).pow(2)
    if weights is None:
        return error.flatten(1).mean(1)
    weights = weights.float().expand_as(error)
    return (error * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-8)


def timestep_bins(
    timesteps: torch.Tensor, bins: int = APT_BINS, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Bin b = ⌊t·bins / T_train⌋ (t in 0..T_train−1): 10 equal bins of 100 timesteps."""
    return (timesteps.long() * bins // num_timesteps).clamp(0, bins - 1)


class OverfitIndicator:
    """Per-bin EMAs of the base model's loss L_pre and the fine-tuned loss L_ft on the same noised samples.

    γ_b = clip(1 − exp(−T·(EMA_b[L_pre] − EMA_b[L_ft])), 0, 1): near 1 once the fine-tuned model beats the
    base model on the training images in bin b by more than ~1/T (memorising them), 0 while it does not.
    A bin's EMA starts at its first observation (an EMA started at 0 would read as overfitting); bins never
    seen have γ = 0. Several samples of one bin in a step count as one observation (their mean).
    """

    def __init__(
        self,
        bins: int = APT_BINS,
        ema: float = APT_EMA,
        temperature: float = APT_TEMPERATURE,
        num_timesteps: int = NUM_TRAIN_TIMESTEPS,
    ):
        self.bins, self.ema, self.temperature, self.num_timesteps = bins, ema, temperature, num_timesteps
        self.ema_pre = torch.zeros(bins, dtype=torch.float64)
        self.ema_ft = torch.zeros(bins, dtype=torch.float64)
        self.seen = torch.zeros(bins, dtype=torch.bool)

    def update(self, timesteps: torch.Tensor, loss_pre: torch.Tensor, loss_ft: torch.Tensor) -> None:
        b = timestep_bins(timesteps, self.bins, self.num_timesteps).cpu()
        loss_pre, loss_ft = loss_pre.detach().double().cpu(), loss_ft.detach().double().cpu()
        for bin_ in b.unique().tolist():
            rows = b == bin_
            pre, ft = loss_pre[rows].mean(), loss_ft[rows].mean()
            if self.seen[bin_]:
                self.ema_pre[bin_] += self.ema * (pre - self.ema_pre[bin_])
                self.ema_ft[bin_] += self.ema * (ft - self.ema_ft[bin_])
            else:
                self.ema_pre[bin_], self.ema_ft[bin_], self.seen[bin_] = pre, ft, True

    def gamma(self) -> torch.Tensor:
        """γ per bin, float64, in [0, 1]."""
        gap = torch.where(self.seen, self.ema_pre - self.ema_ft, torch.zeros_like(self.ema_pre))
        return (1.0 - torch.exp(-self.temperature * gap)).clamp(0.0, 1.0)

    def gamma_for(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.gamma()[timestep_bins(timesteps, self.bins, self.num_timesteps).cpu()].float()

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Adaptive loss weight 1 − γ_b per sample: overfit bins stop pulling the model further."""
        return 1.0 - self.gamma_for(timesteps)

    def augment_probability(self, timesteps: torch.Tensor, p_max: float) -> torch.Tensor:
        """Adaptive augmentation probability clip(γ_b, 0, p_max) per sample."""
        return self.gamma_for(timesteps).clamp(0.0, p_max)

    def state(self) -> dict[str, list[float]]:
        return {
            "gamma": [round(v, 6) for v in self.gamma().tolist()],
            "ema_pre": [round(v, 6) for v in self.ema_pre.tolist()],
            "ema_ft": [round(v, 6) for v in self.ema_ft.tolist()],
        }


def channel_stats(feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-wise mean and standard deviation (population) of a B×C×H×W feature map over H×W: (B×C, B×C)."""
    flat = feature.float().flatten(2)
    mean = flat.mean(-1)
    std = (flat.var(-1, unbiased=False) + 1e-8).sqrt()  # eps: the gradient of sqrt at 0 is infinite
    return mean, std


def feature_stats_loss(
    tuned: Sequence[tuple[torch.Tensor, torch.Tensor]], base: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Representation stabilization: mean over layers of MSE(μ_ft, μ_base) + MSE(σ_ft, σ_base), μ/σ per
    sample and channel (from ``channel_stats``)."""
    if len(tuned) != len(base) or not tuned:
        raise ValueError(f"feature statistics: {len(tuned)} fine-tuned vs {len(base)} base layers")
    terms = [(mt - mb).pow(2).mean() + (st - sb).pow(2).mean() for (mt, st), (mb, sb) in zip(tuned, base)]
    return torch.stack(terms).mean()


def attention_probs(query: torch.Tensor, key: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(Q·Kᵀ·scale) per head: query B×Lq×(heads·d), key B×Lk×(heads·d) → B×heads×Lq×Lk."""
    b, lq, inner = query.shape
    d = inner // heads
    q = query.float().view(b, lq, heads, d).transpose(1, 2)
    k = key.float().view(b, key.shape[1], heads, d).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)


def attention_alignment_loss(tuned: Sequence[torch.Tensor], base: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention alignment: mean over layers of the squared L2 distance between the fine-tuned and base
    cross-attention distributions of each query (Σ over text tokens, mean over batch, heads and queries)."""
    if len(tuned) != len(base) or not tuned:
        raise ValueError(f"attention alignment: {len(tuned)} fine-tuned vs {len(base)} base maps")
    terms = [(t - b).pow(2).sum(-1).mean() for t, b in zip(tuned, base)]
    return torch.stack(terms).mean()


def gamma_value(ema_pre: float, ema_ft: float, temperature: float = APT_TEMPERATURE) -> float:
    """γ for one bin from its two EMAs (the scalar formula, for reports and checks)."""
    return min(1.0, max(0.0, 1.0 - math.exp(-temperature * (ema_pre - ema_ft))))
