"""Variability scoring, ranking, score table and contact sheet (pure numpy, no ComfyUI)."""
import numpy as np
import pytest

from image_alchemy.alchemy import token_scoring as ts


def _smooth_random(rng, n, size=64):
    """Random images with some spatial structure (white noise alone gives SSIM ≈ 0 for everything)."""
    import cv2

    return np.stack([cv2.GaussianBlur(rng.random((size, size, 3)), (0, 0), 2.0) for _ in range(n)])


@pytest.fixture
def candidate_sets():
    rng = np.random.default_rng(0)
    base = _smooth_random(rng, 1)[0]
    return {
        "same": np.stack([base] * 4),                                             # identical: full prior
        "close": np.clip(np.stack([base + rng.normal(0, 0.03, base.shape) for _ in range(4)]), 0, 1),
        "unrelated": _smooth_random(rng, 4),                                      # no prior
    }


def test_identical_images_rank_last_and_unrelated_first(candidate_sets):
    scores = [ts.score_candidate(name, images) for name, images in candidate_sets.items()]
    ranked = ts.rank(scores)
    assert [s.token for s in ranked] == ["unrelated", "close", "same"]
    assert ranked[-1].ssim == pytest.approx(1.0)
    assert ranked[0].ssim < 0.5 < ranked[1].ssim


def test_embedding_similarity_joins_the_score(candidate_sets):
    rng = np.random.default_rng(1)
    same_embed = np.tile(rng.normal(size=(1, 16)), (4, 1))
    spread_embed = rng.normal(size=(4, 16))
    # Equal SSIM for both candidates: the embeddings alone must decide the order.
    images = candidate_sets["unrelated"]
    a = ts.score_candidate("a", images, same_embed)
    b = ts.score_candidate("b", images, spread_embed)
    assert a.embedding_similarity == pytest.approx(1.0)
    assert a.prior == pytest.approx(0.5 * (a.ssim + 1.0))
    assert [s.token for s in ts.rank([a, b])] == ["b", "a"]
    with pytest.raises(ValueError, match="3 embeddings for 4 images"):
        ts.score_candidate("c", images, spread_embed[:3])


def test_mean_pairwise_cosine():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert ts.mean_pairwise_cosine(e) == pytest.approx((0.0 + 2 * np.sqrt(0.5)) / 3)


def test_ssim_needs_two_images_and_handles_tiny_previews():
    with pytest.raises(ValueError, match="at least 2 images"):
        ts.mean_pairwise_ssim(np.zeros((1, 8, 8, 3)))
    tiny = np.random.default_rng(0).random((3, 5, 6, 3))
    assert -1.0 <= ts.mean_pairwise_ssim(tiny) <= 1.0  # window shrinks to 5 px instead of failing


def test_ties_keep_input_order():
    scores = [ts.CandidateScore("x", 0.2, None), ts.CandidateScore("y", 0.2, None), ts.CandidateScore("z", 0.1, None)]
    assert [s.token for s in ts.rank(scores)] == ["z", "x", "y"]


def test_score_table_lists_ranks_and_rejections():
    ranked = ts.rank([ts.CandidateScore("iklan", 0.5, None), ts.CandidateScore("ffin", 0.25, 0.75)])
    table = ts.score_table(ranked, [("immen", "2 tokens in clip_l")])
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "token", "ssim", "embed_sim", "prior"]
    assert lines[1].split() == ["1", "iklan", "0.5000", "-", "0.5000"]
    assert lines[2].split() == ["2", "ffin", "0.2500", "0.7500", "0.5000"]
    assert "immen: 2 tokens in clip_l" in table


def test_contact_sheet_layout_and_labels():
    rng = np.random.default_rng(0)
    rows = [("#1 ffin\n0.100", rng.random((3, 32, 40, 3))), ("#2 iklan\n0.900", rng.random((3, 32, 40, 3)))]
    sheet = ts.contact_sheet(rows)
    assert sheet.shape == (2 * 32, ts.LABEL_WIDTH + 3 * 40, 3) and sheet.dtype == np.float32
    # Images land in their cells unchanged (row 1, seed 2), below the 1 px row divider.
    np.testing.assert_allclose(sheet[33:64, ts.LABEL_WIDTH + 80:ts.LABEL_WIDTH + 120], rows[1][1][2][1:], atol=1e-6)
    # The label cell holds drawn text: white pixels on the dark background.
    assert sheet[1:32, :ts.LABEL_WIDTH].max() > 0.9
    with pytest.raises(ValueError, match="same image count"):
        ts.contact_sheet([("a", np.zeros((2, 8, 8, 3))), ("b", np.zeros((3, 8, 8, 3)))])
