"""Job data for trainer runs that need no encoder: seeded random tensors of the tiny model's shapes."""

from __future__ import annotations

import torch
from image_alchemy.training.trainer import TrainingData


def random_training_data(seed: int = 0) -> TrainingData:
    """Two 64 px latents, one prompt: the tiny SDXL's shapes (context 64, pooled 32)."""
    generator = torch.Generator().manual_seed(seed)
    return TrainingData(
        latents=torch.randn(2, 4, 8, 8, generator=generator),
        prompt_embeds=torch.randn(1, 77, 64, generator=generator),
        pooled_prompt_embeds=torch.randn(1, 32, generator=generator),
        time_ids=torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
    )
