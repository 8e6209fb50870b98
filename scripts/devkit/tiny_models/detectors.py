"""Tiny random GroundingDINO and SAM models in the file formats the real weights come in.

- ``write_grounding_dino_hf(dir)``: a Hugging Face folder (``save_pretrained`` of model and processor).
- ``write_grounding_dino_original(dir, hf_dir)``: the same weights as an original IDEA-Research checkpoint
  (``{"model": state}`` with ``module.`` prefixes, fused q/k/v, BERT pooler, Swin buffers) plus the
  ``bert-base-uncased`` folder the loader expects beside it. The key mapping here is written from the original
  code's names, independently of the converter under test.
- ``write_sam(path)``: a tiny segment-anything SAM state dict saved with ``torch.save``.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path

import torch

WORDS = ["a", "dog", "cat", "toy", "person", "photo", "of", "the", "on", "beach", "red", "ball", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","] + WORDS
D_MODEL = 32


def _seeded_init(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1]) ** 0.5)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)


def bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )


def grounding_dino_config(text_config=None):
    from transformers import GroundingDinoConfig, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7, out_indices=[2, 3, 4])
    # Heads, sampling points and text length keep the released defaults, so the original-checkpoint loader
    # (which cannot read them from tensor shapes) rebuilds exactly this model.
    return GroundingDinoConfig(
        backbone_config=swin,
        text_config=text_config or bert_config(),
        d_model=D_MODEL,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=20,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    )


def write_grounding_dino_hf(folder: Path, seed: int = 0, shortest_edge: int = 256) -> Path:
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    folder = Path(folder)
    model = GroundingDinoForObjectDetection(grounding_dino_config())
    _seeded_init(model, seed)
    model.save_pretrained(folder)
    # Tiny model, tiny inputs: the processor resizes to 256 px instead of 800 to keep tests fast on CPU.
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": shortest_edge, "longest_edge": 2 * shortest_edge}
    )
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=_tokenizer(folder)).save_pretrained(folder)
    return folder


# --- hub layout → original IDEA-Research layout --------------------------------------------------------------
_SWIN = "model.backbone.conv_encoder.model."
_LAYER_TABLES = {  # hub sub-name → original sub-name, per (hub prefix, original prefix)
    ("model.encoder.layers.{i}.deformable_layer.", "transformer.encoder.layers.{i}."): {
        "self_attn.sampling_offsets": "self_attn.sampling_offsets",
        "self_attn.attention_weights": "self_attn.attention_weights",
        "self_attn.value_proj": "self_attn.value_proj",
        "self_attn.output_proj": "self_attn.output_proj",
        "self_attn_layer_norm": "norm1",
        "fc1": "linear1",
        "fc2": "linear2",
        "final_layer_norm": "norm2",
    },
    ("model.encoder.layers.{i}.text_enhancer_layer.", "transformer.encoder.text_layers.{i}."): {
        "self_attn.out_proj": "self_attn.out_proj",
        "fc1": "linear1",
        "fc2": "linear2",
        "layer_norm_before": "norm1",
        "layer_norm_after": "norm2",
    },
    ("model.encoder.layers.{i}.fusion_layer.", "transformer.encoder.fusion_layers.{i}."): {
        "layer_norm_vision": "layer_norm_v",
        "layer_norm_text": "layer_norm_l",
        "attn.vision_proj": "attn.v_proj",
        "attn.text_proj": "attn.l_proj",
        "attn.values_vision_proj": "attn.values_v_proj",
        "attn.values_text_proj": "attn.values_l_proj",
        "attn.out_vision_proj": "attn.out_v_proj",
        "attn.out_text_proj": "attn.out_l_proj",
        "vision_param": "gamma_v",
        "text_param": "gamma_l",
    },
    ("model.decoder.layers.{i}.", "transformer.decoder.layers.{i}."): {
        "encoder_attn.sampling_offsets": "cross_attn.sampling_offsets",
        "encoder_attn.attention_weights": "cross_attn.attention_weights",
        "encoder_attn.value_proj": "cross_attn.value_proj",
        "encoder_attn.output_proj": "cross_attn.output_proj",
        "encoder_attn_layer_norm": "norm1",
        "encoder_attn_text.out_proj": "ca_text.out_proj",
        "encoder_attn_text_layer_norm": "catext_norm",
        "self_attn.out_proj": "self_attn.out_proj",
        "self_attn_layer_norm": "norm2",
        "fc1": "linear1",
        "fc2": "linear2",
        "final_layer_norm": "norm3",
    },
}
_FUSED = {  # hub q/k/v prefix → original fused in-projection prefix
    r"model\.backbone\.conv_encoder\.model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self": (
        "backbone.0.layers.{0}.blocks.{1}.attn.qkv.weight",
        "backbone.0.layers.{0}.blocks.{1}.attn.qkv.bias",
    ),
    r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.self_attn": (
        "transformer.encoder.text_layers.{0}.self_attn.in_proj_weight",
        "transformer.encoder.text_layers.{0}.self_attn.in_proj_bias",
    ),
    r"model\.decoder\.layers\.(\d+)\.self_attn": (
        "transformer.decoder.layers.{0}.self_attn.in_proj_weight",
        "transformer.decoder.layers.{0}.self_attn.in_proj_bias",
    ),
    r"model\.decoder\.layers\.(\d+)\.encoder_attn_text": (
        "transformer.decoder.layers.{0}.ca_text.in_proj_weight",
        "transformer.decoder.layers.{0}.ca_text.in_proj_bias",
    ),
}
_PREFIX = [
    ("model.text_backbone.", "bert."),
    ("model.input_proj_vision.", "input_proj."),
    ("model.text_projection.", "feat_map."),
    ("model.decoder.reference_points_head.", "transformer.decoder.ref_point_head."),
    ("model.enc_output_norm.", "transformer.enc_output_norm."),
    ("model.enc_output.", "transformer.enc_output."),
    ("model.encoder_output_bbox_embed.", "transformer.enc_out_bbox_embed."),
    ("model.level_embed", "transformer.level_embed"),
    ("model.query_position_embeddings.", "transformer.tgt_embed."),
    ("model.decoder.layer_norm.", "transformer.decoder.norm."),
]
_SWIN_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
}


def _to_original_key(key: str) -> str:
    if key.startswith(_SWIN):
        rest = key[len(_SWIN) :]
        if m := re.match(r"hidden_states_norms\.stage(\d+)\.(.+)", rest):
            return f"backbone.0.norm{int(m.group(1)) - 1}.{m.group(2)}"
        rest = rest.replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.")
        rest = rest.replace("embeddings.norm.", "patch_embed.norm.").removeprefix("encoder.")
        for hub, orig in _SWIN_BLOCK.items():
            rest = re.sub(rf"(blocks\.\d+)\.{re.escape(hub)}\b", rf"\1.{orig}", rest)
        return "backbone.0." + rest
    for (hub_prefix, orig_prefix), table in _LAYER_TABLES.items():
        if m := re.match(re.escape(hub_prefix).replace(r"\{i\}", r"(\d+)") + r"(.+?)(\.(weight|bias))?$", key):
            i, sub, tail = m.group(1), m.group(2), m.group(3) or ""
            if sub in table:
                return orig_prefix.format(i=i) + table[sub] + tail
    for hub, orig in _PREFIX:
        if key.startswith(hub):
            return orig + key[len(hub) :]
    if key.startswith("bbox_embed."):
        return key
    raise KeyError(f"no original name for {key}")


def to_original_layout(hub: dict[str, torch.Tensor], decoder_layers: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in hub.items():
        fused = next(
            ((pat, names) for pat, names in _FUSED.items() if re.match(pat + r"\.(query|key|value)\.", key)), None
        )
        if fused:
            m = re.match(fused[0] + r"\.query\.weight$", key)
            if m:
                base = key[: -len(".query.weight")]
                w = torch.cat([hub[f"{base}.{n}.weight"] for n in ("query", "key", "value")])
                b = torch.cat([hub[f"{base}.{n}.bias"] for n in ("query", "key", "value")])
                out[fused[1][0].format(*m.groups())], out[fused[1][1].format(*m.groups())] = w, b
            continue
        out[_to_original_key(key)] = value.clone()
    # The original ties one box head to every decoder layer and to transformer.decoder; all copies are saved.
    for key in [k for k in out if k.startswith("bbox_embed.0.")]:
        for i in range(decoder_layers):
            out[key.replace("bbox_embed.0.", f"bbox_embed.{i}.")] = out[key]
            out[key.replace("bbox_embed.0.", f"transformer.decoder.bbox_embed.{i}.")] = out[key]
    # Extra tensors the original carries and the converter must drop.
    g = torch.Generator().manual_seed(1)
    hidden = out["bert.embeddings.word_embeddings.weight"].shape[1]
    out["bert.pooler.dense.weight"] = torch.randn(hidden, hidden, generator=g)
    out["bert.pooler.dense.bias"] = torch.zeros(hidden)
    out["bert.embeddings.position_ids"] = torch.arange(out["bert.embeddings.position_embeddings.weight"].shape[0])[None]
    for key in [k for k in out if k.endswith("attn.relative_position_bias_table")]:
        out[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(
            49, 49, dtype=torch.long
        )
    return out


def write_grounding_dino_original(folder: Path, hf_dir: Path, name: str = "groundingdino_tiny_test.pth") -> Path:
    """The HF folder's weights as an original checkpoint, with the bert-base-uncased folder beside it."""
    from safetensors.torch import load_file

    folder = Path(folder)
    bert = folder / "bert-base-uncased"
    _tokenizer(bert).save_pretrained(bert)
    bert_config().save_pretrained(bert)
    original = to_original_layout(load_file(Path(hf_dir) / "model.safetensors"), decoder_layers=2)
    path = folder / name
    _atomic_save({"model": {f"module.{k}": v for k, v in original.items()}}, path)
    return path


def write_grounding_dino_original_bert_base(folder: Path, name: str = "groundingdino_swint_ogc.pth", seed: int = 3):
    """An original checkpoint whose text encoder uses bert-base-uncased's 30 522-word vocabulary and 12 heads (at a
    tiny width), with no tokenizer folder beside it: what the loader reads with the shipped BERT files."""
    import tempfile

    from safetensors.torch import load_file
    from transformers import BertConfig, GroundingDinoForObjectDetection

    text = BertConfig(
        vocab_size=30522,
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = GroundingDinoForObjectDetection(grounding_dino_config(text))
    _seeded_init(model, seed)
    with tempfile.TemporaryDirectory() as hf:
        model.save_pretrained(hf)
        original = to_original_layout(load_file(Path(hf) / "model.safetensors"), decoder_layers=2)
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"model": {f"module.{k}": v for k, v in original.items()}}, path)
    return path


# --- SAM -----------------------------------------------------------------------------------------------------
def tiny_sam(seed: int = 0) -> torch.nn.Module:
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    # One windowed block: a global-attention block costs seconds per image on CPU (4096 tokens at 1024 px);
    # inferring global blocks is tested on the released shapes instead.
    encoder = ImageEncoderViT(
        depth=1,
        embed_dim=32,
        img_size=1024,
        mlp_ratio=4.0,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(),
        window_size=14,
        out_chans=32,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer_dim=32,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    _seeded_init(sam, seed)
    return sam.eval()


def write_sam(path: Path, seed: int = 0, empty_hypotheses: tuple[int, ...] = ()) -> Path:
    """``empty_hypotheses``: which of the three multimask outputs (0–2) always come out empty: their
    hypernetwork's last layer is zeroed, so their logits are exactly 0, never above SAM's threshold 0."""
    path = Path(path)
    sam = tiny_sam(seed)
    with torch.no_grad():
        for k in empty_hypotheses:
            last = sam.mask_decoder.output_hypernetworks_mlps[k + 1].layers[-1]  # token 0 is the single-mask one
            last.weight.zero_()
            last.bias.zero_()
    _atomic_save(sam.state_dict(), path)
    return path


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_sam_variant(path: Path, kind: str) -> Path:
    """A checkpoint in the key layout of a SAM derivative this pack does not build: ``"hq"`` (SAM-HQ: the SAM
    weights plus its HQ token, MLP and feature-fusion convolutions in the mask decoder, as sam_hq_vit_*.pth hold
    them) or ``"mobile"`` (MobileSAM: a TinyViT image encoder, ``image_encoder.patch_embed.seq.*`` and
    ``image_encoder.layers.*``, with SAM's prompt encoder and decoder)."""
    state = tiny_sam().state_dict()
    dim = state["mask_decoder.iou_token.weight"].shape[1]
    if kind == "hq":
        state.update(
            {
                "mask_decoder.hf_token.weight": torch.zeros(1, dim),
                "mask_decoder.hf_mlp.layers.0.weight": torch.zeros(dim, dim),
                "mask_decoder.compress_vit_feat.0.weight": torch.zeros(dim, 16, 2, 2),
                "mask_decoder.embedding_encoder.0.weight": torch.zeros(dim // 4, dim, 2, 2),
                "mask_decoder.embedding_maskfeature.0.weight": torch.zeros(dim // 4, dim // 8, 3, 3),
            }
        )
    elif kind == "mobile":
        state = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
        state.update(
            {
                "image_encoder.patch_embed.seq.0.c.weight": torch.zeros(8, 3, 3, 3),
                "image_encoder.layers.0.blocks.0.conv1.c.weight": torch.zeros(8, 8, 1, 1),
                "image_encoder.neck.0.weight": torch.zeros(dim, 8, 1, 1),
            }
        )
    else:
        raise ValueError(kind)
    _atomic_save(state, Path(path))
    return Path(path)
