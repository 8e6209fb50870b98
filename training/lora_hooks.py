"""What the regularizers need from a peft-LoRA diffusers UNet: its LoRA factors, the base model (the same
UNet with the adapter switched off: no second copy in memory), and feature statistics / cross-attention maps
recorded by hooks during a forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .regularizers import attention_probs, channel_stats


def lora_layers(unet) -> list:
    """peft LoRA layers (those holding ``lora_A``/``lora_B`` for an active adapter), in module order."""
    from peft.tuners.lora import LoraLayer

    return [m for _name, m in unet.named_modules() if isinstance(m, LoraLayer) and m.lora_A]


def lora_factors(unet) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(A, B, scale) per LoRA layer and active adapter: ΔW = scale·B·A."""
    out = []
    for layer in lora_layers(unet):
        for name in layer.active_adapters:
            if name in layer.lora_A:
                out.append((layer.lora_A[name].weight, layer.lora_B[name].weight, float(layer.scaling[name])))
    return out


def lora_parameters(unet) -> list[torch.Tensor]:
    return [p for a, b, _s in lora_factors(unet) for p in (a, b)]


@contextlib.contextmanager
def adapter_disabled(unet) -> Iterator[None]:
    """The base model: the same UNet with its LoRA switched off. Re-enabling makes the LoRA parameters
    trainable again, so run base passes before the fine-tuned forward of a step, not between it and backward."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


class FeatureProbe:
    """Hooks recording, while ``active``, channel-wise mean/std of each UNet block's output (down blocks,
    middle, up blocks) and the cross-attention maps (attn2) of every transformer block.

    The maps are recomputed from the attention module's own to_q/to_k in a pre-hook (LoRA included when it
    is on), so the result does not depend on which attention processor the UNet uses. Hooks do nothing while
    inactive (e.g. during gradient-checkpointing recomputation in the backward pass)."""

    def __init__(self, unet, features: bool, attention: bool):
        self.features, self.attention = features, attention
        self.active = False
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.maps: list[torch.Tensor] = []
        self._handles = []
        if features:
            blocks = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks)
            self._handles += [block.register_forward_hook(self._on_block) for block in blocks]
        if attention:
            cross = [m for name, m in unet.named_modules() if name.endswith("attn2") and hasattr(m, "to_q")]
            if not cross:
                raise ValueError("attention alignment: the UNet has no cross-attention (attn2) layers")
            self._handles += [m.register_forward_pre_hook(self._on_cross_attention, with_kwargs=True) for m in cross]

    def _on_block(self, _module, _inputs, output) -> None:
        if self.active:
            hidden = output[0] if isinstance(output, tuple) else output
            self.stats.append(channel_stats(hidden))

    def _on_cross_attention(self, module, args, kwargs) -> None:
        if not self.active:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        if context is None and len(args) > 1:
            context = args[1]
        if hidden.dim() != 3 or context is None:
            raise ValueError("attention alignment: expected B×L×C hidden states and text context in attn2")
        self.maps.append(attention_probs(module.to_q(hidden), module.to_k(context), module.heads, module.scale))

    @contextlib.contextmanager
    def record(self) -> Iterator[FeatureProbe]:
        """Clears, records one forward pass, stops."""
        self.stats, self.maps, self.active = [], [], True
        try:
            yield self
        finally:
            self.active = False

    def rows(self, count: int) -> tuple[list, list]:
        """The first ``count`` batch rows of what was recorded (the subject rows of a prior-preservation batch)."""
        return ([(m[:count], s[:count]) for m, s in self.stats], [a[:count] for a in self.maps])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
