"""GroundingDINO loading (Hugging Face folder and original checkpoint converted on load) and detection."""

import numpy as np
import pytest
import torch
from image_alchemy.alchemy import grounding
from safetensors.torch import load_file
from tiny_models import detectors as tiny_detectors


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


def test_hf_folder_detects_every_query_at_threshold_zero(tiny_grounding_dino, image):
    detector = grounding.load_grounding_dino(tiny_grounding_dino["hf"])
    assert not detector.model.training
    found = grounding.detect(detector, image, "dog", box_threshold=0.0, text_threshold=0.0)
    n = detector.model.config.num_queries
    assert found["boxes"].shape == (n, 4) and len(found["labels"]) == n
    assert torch.all(found["scores"][:-1] >= found["scores"][1:])  # best first
    boxes = found["boxes"]
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 64
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 48


def test_threshold_above_one_finds_nothing(tiny_grounding_dino, image):
    found = grounding.detect(grounding.load_grounding_dino(tiny_grounding_dino["hf"]), image, "dog", 1.01, 0.0)
    assert found["boxes"].shape == (0, 4) and found["scores"].numel() == 0


def test_original_checkpoint_converts_to_the_same_model(tiny_grounding_dino, image):
    hf = grounding.load_grounding_dino(tiny_grounding_dino["hf"])
    converted = grounding.load_grounding_dino(tiny_grounding_dino["pth"])
    a, b = hf.model.state_dict(), converted.model.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # Same tokenizer ids from the bert-base-uncased folder, same pixels, same outputs.
    inputs = hf.processor(images=image, text="a dog.", return_tensors="pt")
    assert torch.equal(
        inputs["input_ids"], converted.processor(images=image, text="a dog.", return_tensors="pt")["input_ids"]
    )
    with torch.no_grad():
        out_a, out_b = hf.model(**inputs), converted.model(**inputs)
    assert torch.equal(out_a.pred_boxes, out_b.pred_boxes)
    assert torch.equal(out_a.logits, out_b.logits)


def test_converter_maps_every_original_key_onto_the_hub_layout(tiny_grounding_dino):
    original = torch.load(tiny_grounding_dino["pth"], map_location="cpu", weights_only=True)["model"]
    assert all(k.startswith("module.") for k in original)
    hub = load_file(tiny_grounding_dino["hf"] / "model.safetensors")
    converted = grounding.convert_original_state_dict(original)
    assert set(hub) <= set(converted)
    assert all(torch.equal(converted[k], hub[k]) for k in hub)
    # Fused q/k/v were split, the pooler and Swin index buffers dropped.
    assert not any("in_proj" in k or "qkv" in k or "pooler" in k or "relative_position_index" in k for k in converted)


def test_inferred_config_matches_the_model_that_was_saved(tiny_grounding_dino):
    original = torch.load(tiny_grounding_dino["pth"], map_location="cpu", weights_only=True)["model"]
    config = grounding.infer_config(original, tiny_detectors.bert_config().to_dict())
    saved = tiny_detectors.grounding_dino_config()
    for name in (
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "num_queries",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "num_feature_levels",
    ):
        assert getattr(config, name) == getattr(saved, name), name
    for name in ("embed_dim", "depths", "num_heads", "window_size", "out_indices"):
        assert list(np.atleast_1d(getattr(config.backbone_config, name))) == list(
            np.atleast_1d(getattr(saved.backbone_config, name))
        ), name


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        grounding.convert_original_state_dict({"module.something.else.weight": torch.zeros(1)})


def test_original_checkpoint_of_another_vocabulary_without_its_bert_folder_names_what_is_missing(
    tiny_grounding_dino, tmp_path
):
    lonely = tmp_path / "groundingdino_swint_ogc.pth"
    lonely.write_bytes(tiny_grounding_dino["pth"].read_bytes())
    with pytest.raises(ValueError, match="21-word vocabulary.*'bert-base-uncased' folder beside it"):
        grounding.load_grounding_dino(lonely)


def test_original_checkpoint_alone_loads_with_the_shipped_bert_tokenizer(tmp_path, image):
    """The one .pth a download dialog fetches is enough: bert-base-uncased's config and tokenizer are shipped."""
    path = tiny_detectors.write_grounding_dino_original_bert_base(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groundingdino_swint_ogc.pth"]
    detector = grounding.load_grounding_dino(path)
    text = detector.model.config.text_config
    assert (text.vocab_size, text.hidden_size, text.num_attention_heads, text.num_hidden_layers) == (30522, 48, 12, 1)
    # bert-base-uncased's ids: [CLS] a dog . [SEP]
    ids = detector.processor(images=image, text="a dog.", return_tensors="pt")["input_ids"]
    assert ids.tolist() == [[101, 1037, 3899, 1012, 102]]
    assert grounding.detect(detector, image, "dog", 0.0, 0.0)["boxes"].shape[1] == 4


def test_shipped_bert_files_are_bert_base_uncased():
    import hashlib

    vocab = (grounding.SHIPPED_BERT / "vocab.txt").read_bytes()
    assert hashlib.sha256(vocab).hexdigest() == "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    assert len(vocab.splitlines()) == 30522


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        grounding.load_grounding_dino(tmp_path)
