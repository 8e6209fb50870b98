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
        "same": np.stack([base] * 4),  # identical: full prior
        "close": np.clip(np.stack([base + rng.normal(0, 0.03, base.shape) for _ in range(4)]), 0, 1),
        "unrelated": _smooth_random(rng, 4),  # no prior
    }


def test_identical_images_rank_last_and_unrelated_first(candidate_sets):
    scores = [ts.score_candidate(name, images) for name, images in candidate_sets.items()]
    ranked = ts.rank(scores)
    assert [s.token for s in ranked] == ["unrelated", "close", "same"]
    assert {s.measure for s in ranked} == {"ssim"}
    assert ranked[-1].similarity == pytest.approx(1.0)
    assert ranked[0].similarity < 0.5 < ranked[1].similarity


def test_embeddings_replace_ssim_as_the_measure(candidate_sets):
    rng = np.random.default_rng(1)
    same_embed = np.tile(rng.normal(size=(1, 16)), (4, 1))
    spread_embed = rng.normal(size=(4, 16))
    # Identical images for both: the embeddings alone decide, on their own scale (no mix with SSIM).
    images = candidate_sets["same"]
    a = ts.score_candidate("a", images, same_embed)
    b = ts.score_candidate("b", images, spread_embed)
    assert a.measure == b.measure == "embed_cos"
    assert a.similarity == pytest.approx(1.0) and b.similarity == pytest.approx(ts.mean_pairwise_cosine(spread_embed))
    assert [s.token for s in ts.rank([a, b])] == ["b", "a"]
    with pytest.raises(ValueError, match="'c': 3 embeddings for 4 images"):
        ts.score_candidate("c", images, spread_embed[:3])
    with pytest.raises(ValueError, match="different measures"):
        ts.rank([a, ts.score_candidate("d", images)])


def _stub_prompt_images(rng, n=8, size=64):
    """A stub image set: the class word's images share one picture (strong prior), the empty prompt's are
    independent (no prior)."""
    base = _smooth_random(rng, 1, size)[0]
    class_word = np.clip(base + rng.normal(0, 0.02, (n, size, size, 3)), 0, 1)
    return class_word, _smooth_random(rng, n, size)


@pytest.mark.parametrize("with_embeddings", [False, True])
def test_calibration_maps_the_class_word_to_one_and_independent_noise_to_zero(with_embeddings):
    rng = np.random.default_rng(3)
    class_images, empty_images = _stub_prompt_images(rng)
    embed = {}
    if with_embeddings:  # a fixed random projection stands in for the image encoder
        proj = rng.normal(size=(64 * 64 * 3, 32))
        embed = lambda im: (im.reshape(len(im), -1) - 0.5) @ proj
    else:
        embed = lambda im: None
    measure = lambda im: ts.similarity(im, embed(im))[0]
    cal = ts.Calibration(class_word=measure(class_images), empty=measure(empty_images))
    assert cal.separates and cal.class_word > cal.empty + 0.3
    as_class = ts.score_candidate("as_class", class_images.copy(), embed(class_images), cal)
    noise = _smooth_random(rng, 8)  # independent of both references
    as_noise = ts.score_candidate("as_noise", noise, embed(noise), cal)
    halfway = np.clip(np.concatenate([class_images[:4], noise[:4]]), 0, 1)
    between = ts.score_candidate("between", halfway, embed(halfway), cal)
    assert as_class.prior == pytest.approx(1.0, abs=1e-9)
    assert as_noise.prior == pytest.approx(0.0, abs=0.05)
    assert 0.1 < between.prior < 0.9
    assert [s.token for s in ts.rank([as_class, between, as_noise])] == ["as_noise", "between", "as_class"]


def test_calibration_reports_unknown_when_references_do_not_separate():
    cal = ts.Calibration(class_word=0.30, empty=0.30)
    assert not cal.separates and cal.prior(0.9) is None
    assert ts.Calibration(0.8, 0.2).prior(0.95) == 1.0 and ts.Calibration(0.8, 0.2).prior(0.1) == 0.0
    table = ts.score_table([ts.CandidateScore("ffin", 0.3, "ssim", None)], calibration=cal)
    assert "prior unknown" in table and table.splitlines()[1].split() == ["1", "ffin", "0.3000", "-"]


def test_ssim_runs_on_thumbnails_of_large_images():
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(_smooth_random(rng, 3, 128), 8, axis=1), 8, axis=2)  # 1024² made of 8×8 blocks
    assert ts.thumbnails(big).shape == (3, 256, 256, 3) and ts.thumbnails(big[:, :64, :64]).shape == (3, 64, 64, 3)
    value, measure = ts.similarity(big)
    assert measure == "ssim" and value == pytest.approx(ts.mean_pairwise_ssim(ts.thumbnails(big)))


def test_mean_pairwise_cosine():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert ts.mean_pairwise_cosine(e) == pytest.approx((0.0 + 2 * np.sqrt(0.5)) / 3)


def test_ssim_needs_two_images_and_handles_tiny_previews():
    with pytest.raises(ValueError, match="at least 2 images"):
        ts.mean_pairwise_ssim(np.zeros((1, 8, 8, 3)))
    tiny = np.random.default_rng(0).random((3, 5, 6, 3))
    assert -1.0 <= ts.mean_pairwise_ssim(tiny) <= 1.0  # window shrinks to 5 px instead of failing


@pytest.mark.parametrize("shape", [(8, 96, 80, 3), (3, 5, 6, 3), (4, 9, 7, 1)])
def test_ssim_equals_skimage_over_every_pair(shape):
    """Per-image window statistics shared across pairs give skimage's value, not an approximation of it."""
    import itertools

    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    images = rng.random(shape)
    images[1] = np.clip(images[0] + rng.normal(0, 0.05, shape[1:]), 0, 1)  # one similar pair among unrelated
    side = min(shape[1:3])
    win = min(7, side if side % 2 else side - 1)
    expected = np.mean(
        [
            structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win)
            for a, b in itertools.combinations(images, 2)
        ]
    )
    assert ts.mean_pairwise_ssim(images) == pytest.approx(expected, abs=1e-12)


def test_ties_keep_input_order():
    scores = [
        ts.CandidateScore("x", 0.2, "ssim"),
        ts.CandidateScore("y", 0.2, "ssim"),
        ts.CandidateScore("z", 0.1, "ssim"),
    ]
    assert [s.token for s in ts.rank(scores)] == ["z", "x", "y"]


def test_score_table_lists_ranks_references_notes_and_rejections():
    cal = ts.Calibration(class_word=0.9, empty=0.1)
    ranked = ts.rank(
        [
            ts.CandidateScore("iklan", 0.5, "embed_cos", cal.prior(0.5)),
            ts.CandidateScore("ffin", 0.3, "embed_cos", cal.prior(0.3)),
        ]
    )
    table = ts.score_table(
        ranked,
        [("immen", "2 tokens in clip_l (paper)")],
        cal,
        notes={"": ["source", "s/cand"], "ffin": ["paper", "1.20"], "iklan": ["scan", "0.90"]},
        footer=["36 images sampled"],
    )
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "token", "embed_cos", "prior", "source", "s/cand"]
    assert lines[1].split() == ["1", "ffin", "0.3000", "0.250", "paper", "1.20"]
    assert lines[2].split() == ["2", "iklan", "0.5000", "0.500", "scan", "0.90"]
    assert "class word 0.9000 → prior 1, empty prompt 0.1000 → prior 0" in table
    assert "36 images sampled" in table and "immen: 2 tokens in clip_l (paper)" in table


def test_contact_sheet_layout_and_labels():
    rng = np.random.default_rng(0)
    rows = [("#1 ffin\n0.100", rng.random((3, 32, 40, 3))), ("#2 iklan\n0.900", rng.random((3, 32, 40, 3)))]
    sheet = ts.contact_sheet(rows)
    assert sheet.shape == (2 * 32, ts.LABEL_WIDTH + 3 * 40, 3) and sheet.dtype == np.float32
    # Images land in their cells unchanged (row 1, seed 2), below the 1 px row divider.
    np.testing.assert_allclose(sheet[33:64, ts.LABEL_WIDTH + 80 : ts.LABEL_WIDTH + 120], rows[1][1][2][1:], atol=1e-6)
    # The label cell holds drawn text: white pixels on the dark background.
    assert sheet[1:32, : ts.LABEL_WIDTH].max() > 0.9
    # 1024² images land as SHEET_SIDE thumbnails: the sheet stays small whatever the sample size.
    big = ts.contact_sheet([("a", np.zeros((2, 1024, 1024, 3)))])
    assert big.shape == (ts.SHEET_SIDE, ts.LABEL_WIDTH + 2 * ts.SHEET_SIDE, 3)
    with pytest.raises(ValueError, match="same image count"):
        ts.contact_sheet([("a", np.zeros((2, 8, 8, 3))), ("b", np.zeros((3, 8, 8, 3)))])
