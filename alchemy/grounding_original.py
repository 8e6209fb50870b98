"""An original IDEA-Research GroundingDINO checkpoint (``groundingdino_swint_ogc.pth``, …) in the Hugging Face hub
layout: the key mapping of transformers' ``convert_grounding_dino_to_hf.py`` (no longer shipped in the wheel) and
the model config read from the weights (docs/DESIGN.md §5.2). ``alchemy.grounding`` hands the result to
``from_pretrained``, so transformers applies its own renames for the installed version.
"""

from __future__ import annotations

import re

import torch

# Original → hub names, per encoder / decoder layer (from convert_grounding_dino_to_hf.py).
_DEFORMABLE = {
    "self_attn.sampling_offsets": "deformable_layer.self_attn.sampling_offsets",
    "self_attn.attention_weights": "deformable_layer.self_attn.attention_weights",
    "self_attn.value_proj": "deformable_layer.self_attn.value_proj",
    "self_attn.output_proj": "deformable_layer.self_attn.output_proj",
    "norm1": "deformable_layer.self_attn_layer_norm",
    "linear1": "deformable_layer.fc1",
    "linear2": "deformable_layer.fc2",
    "norm2": "deformable_layer.final_layer_norm",
}
_TEXT_ENHANCER = {
    "self_attn.out_proj": "text_enhancer_layer.self_attn.out_proj",
    "linear1": "text_enhancer_layer.fc1",
    "linear2": "text_enhancer_layer.fc2",
    "norm1": "text_enhancer_layer.layer_norm_before",
    "norm2": "text_enhancer_layer.layer_norm_after",
}
_FUSION = {
    "layer_norm_v": "fusion_layer.layer_norm_vision",
    "layer_norm_l": "fusion_layer.layer_norm_text",
    "attn.v_proj": "fusion_layer.attn.vision_proj",
    "attn.l_proj": "fusion_layer.attn.text_proj",
    "attn.values_v_proj": "fusion_layer.attn.values_vision_proj",
    "attn.values_l_proj": "fusion_layer.attn.values_text_proj",
    "attn.out_v_proj": "fusion_layer.attn.out_vision_proj",
    "attn.out_l_proj": "fusion_layer.attn.out_text_proj",
}
_FUSION_PARAMS = {"gamma_v": "fusion_layer.vision_param", "gamma_l": "fusion_layer.text_param"}
_DECODER = {
    "cross_attn.sampling_offsets": "encoder_attn.sampling_offsets",
    "cross_attn.attention_weights": "encoder_attn.attention_weights",
    "cross_attn.value_proj": "encoder_attn.value_proj",
    "cross_attn.output_proj": "encoder_attn.output_proj",
    "norm1": "encoder_attn_layer_norm",
    "ca_text.out_proj": "encoder_attn_text.out_proj",
    "catext_norm": "encoder_attn_text_layer_norm",
    "self_attn.out_proj": "self_attn.out_proj",
    "norm2": "self_attn_layer_norm",
    "linear1": "fc1",
    "linear2": "fc2",
    "norm3": "final_layer_norm",
}
_SWIN_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_PREFIXES = {  # whole sub-trees that only change their prefix
    "bert.": "model.text_backbone.",
    "input_proj.": "model.input_proj_vision.",
    "feat_map.": "model.text_projection.",
    "transformer.decoder.ref_point_head.": "model.decoder.reference_points_head.",
    "transformer.decoder.bbox_embed.": "model.decoder.bbox_embed.",
    "transformer.enc_output.": "model.enc_output.",
    "transformer.enc_output_norm.": "model.enc_output_norm.",
    "transformer.enc_out_bbox_embed.": "model.encoder_output_bbox_embed.",
    "bbox_embed.": "bbox_embed.",
}
_SINGLE = {
    "transformer.level_embed": "model.level_embed",
    "transformer.tgt_embed.weight": "model.query_position_embeddings.weight",
    "transformer.decoder.norm.weight": "model.decoder.layer_norm.weight",
    "transformer.decoder.norm.bias": "model.decoder.layer_norm.bias",
}
# In the original checkpoint but not in the Hugging Face model: recomputed buffers, BERT's unused pooler and
# DINO's denoising label book (training only).
_DROPPED = re.compile(r"(relative_position_index|attn_mask|position_ids|^bert\.pooler\.|^label_enc\.)")
_SWIN_ROOT = "model.backbone.conv_encoder.model."


def _split_qkv(out: dict, prefix: str, weight: torch.Tensor, bias: torch.Tensor, names=("query", "key", "value")):
    """Fused in-projection (q, k, v stacked along dim 0, as nn.MultiheadAttention / timm store it) → three."""
    for name, w, b in zip(names, weight.chunk(3, dim=0), bias.chunk(3, dim=0)):
        out[f"{prefix}.{name}.weight"] = w.clone()
        out[f"{prefix}.{name}.bias"] = b.clone()


def _rename(key: str) -> str | None:
    """Hub name of one original key that is not a fused projection; None when the key is unknown."""
    if key in _SINGLE:
        return _SINGLE[key]
    m = re.match(r"backbone\.0\.(.+)$", key)
    if m:
        rest = m.group(1)
        rest = re.sub(r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection.", rest)
        rest = re.sub(r"^patch_embed\.norm\.", "embeddings.norm.", rest)
        blk = re.match(r"(layers\.\d+\.blocks\.\d+)\.(.+)\.(weight|bias|relative_position_bias_table)$", rest)
        if blk and blk.group(2) in _SWIN_BLOCK:
            rest = f"{blk.group(1)}.{_SWIN_BLOCK[blk.group(2)]}.{blk.group(3)}"
        elif blk and blk.group(2) == "attn" and blk.group(3) == "relative_position_bias_table":
            rest = f"{blk.group(1)}.attention.self.relative_position_bias_table"
        norm = re.match(r"norm(\d+)\.(weight|bias)$", rest)
        if norm:  # GroundingDINO numbers its output norms from 0, transformers its stages from 1
            return f"{_SWIN_ROOT}hidden_states_norms.stage{int(norm.group(1)) + 1}.{norm.group(2)}"
        return _SWIN_ROOT + ("encoder." + rest if rest.startswith("layers.") else rest)
    for src, table, dst in (
        ("transformer.encoder.layers", _DEFORMABLE, "model.encoder.layers"),
        ("transformer.encoder.text_layers", _TEXT_ENHANCER, "model.encoder.layers"),
        ("transformer.encoder.fusion_layers", _FUSION, "model.encoder.layers"),
        ("transformer.decoder.layers", _DECODER, "model.decoder.layers"),
    ):
        m = re.match(re.escape(src) + r"\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m and m.group(2) in table:
            return f"{dst}.{m.group(1)}.{table[m.group(2)]}.{m.group(3)}"
    m = re.match(r"transformer\.encoder\.fusion_layers\.(\d+)\.(gamma_[vl])$", key)
    if m:
        return f"model.encoder.layers.{m.group(1)}.{_FUSION_PARAMS[m.group(2)]}"
    for src, dst in _PREFIXES.items():
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def convert_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original GroundingDINO keys (``module.`` prefixes allowed) → Hugging Face hub layout.

    Raises ValueError listing keys it does not know, so a checkpoint of another architecture is not half-loaded.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        fused = re.match(r"(.+)\.(in_proj_weight|qkv\.weight)$", key)
        if fused:
            base = fused.group(1)
            bias = state[base + (".in_proj_bias" if key.endswith("in_proj_weight") else ".qkv.bias")]
            m = re.match(r"backbone\.0\.(layers\.\d+\.blocks\.\d+)\.attn$", base)
            if m:
                _split_qkv(out, f"{_SWIN_ROOT}encoder.{m.group(1)}.attention.self", value, bias)
                continue
            m = re.match(r"transformer\.(encoder\.text_layers|decoder\.layers)\.(\d+)\.(self_attn|ca_text)$", base)
            if m:
                where = "encoder" if m.group(1).startswith("encoder") else "decoder"
                sub = {"self_attn": "self_attn", "ca_text": "encoder_attn_text"}[m.group(3)]
                if where == "encoder":
                    sub = "text_enhancer_layer.self_attn"
                _split_qkv(out, f"model.{where}.layers.{m.group(2)}.{sub}", value, bias)
                continue
        if re.search(r"\.(in_proj_bias|qkv\.bias)$", key):
            continue  # consumed with its weight
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(
            f"not a GroundingDINO checkpoint in the original layout: {len(unknown)} unknown keys, e.g. {unknown[:5]}"
        )
    return out


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def infer_config(state: dict[str, torch.Tensor], text_config: dict):
    """GroundingDinoConfig for an original checkpoint: sizes read from the tensor shapes, the rest from the
    defaults transformers uses for the released models (8 attention heads, 4 sampling points, 256 text tokens)."""
    from transformers import GroundingDinoConfig, SwinConfig

    state = {k.removeprefix("module."): v for k, v in state.items()}
    embed_dim = state["backbone.0.patch_embed.proj.weight"].shape[0]
    n_stages = _count(state, r"backbone\.0\.layers\.(\d+)\.")
    depths = [_count(state, rf"backbone\.0\.layers\.{i}\.blocks\.(\d+)\.") for i in range(n_stages)]
    heads = [
        state[f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(n_stages)
    ]
    table = state["backbone.0.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (int(round(table**0.5)) + 1) // 2
    levels, d_model = state["transformer.level_embed"].shape
    out_indices = sorted(int(m.group(1)) + 1 for k in state if (m := re.match(r"backbone\.0\.norm(\d+)\.weight$", k)))
    backbone = SwinConfig(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        image_size=384 if window == 12 else 224,
        out_indices=out_indices,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text_config,
        d_model=int(d_model),
        num_feature_levels=int(levels),
        encoder_layers=_count(state, r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(state, r"transformer\.decoder\.layers\.(\d+)\."),
        encoder_ffn_dim=state["transformer.encoder.layers.0.linear1.weight"].shape[0],
        decoder_ffn_dim=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
        num_queries=state["transformer.tgt_embed.weight"].shape[0],
    )
