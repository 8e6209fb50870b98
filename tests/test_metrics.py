"""alchemy.metrics / backbones / quality on tiny random backbones saved in the real transformers formats."""

import math

import numpy as np
import pytest
import torch
from image_alchemy.alchemy import backbones, metrics, quality
from tiny_models.backbones import pictures


@pytest.fixture(scope="module")
def dino(tiny_backbones):
    return backbones.DinoBackbone.load(str(tiny_backbones["dino"]))


@pytest.fixture(scope="module")
def clip(tiny_backbones):
    return backbones.ClipBackbone.load(str(tiny_backbones["clip"]))


def test_cosine_math_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    direct = [np.mean([cos(g, r) for r in ref]) for g in gen]
    got = metrics.similarity_to_references(torch.tensor(gen), torch.tensor(ref))
    assert got.tolist() == pytest.approx(direct, abs=1e-6)
    pairs = [cos(ref[i], ref[j]) for i in range(4) for j in range(4) if i != j]
    assert metrics.reference_self_similarity(torch.tensor(ref)) == pytest.approx(np.mean(pairs), abs=1e-6)
    assert math.isnan(metrics.reference_self_similarity(torch.tensor(ref[:1])))
    texts = rng.normal(size=(3, 5))
    assert metrics.text_image_similarity(torch.tensor(gen), torch.tensor(texts)).tolist() == pytest.approx(
        [cos(g, t) for g, t in zip(gen, texts)], abs=1e-6
    )


def test_identical_images_score_one(dino, clip):
    image = pictures(1)[0]
    result = metrics.evaluate([image] * 2, ["a photo of sks dog"] * 2, [image] * 3, dino=dino, clip=clip)
    overall = result.overall()
    assert overall.dino == pytest.approx(1.0, abs=1e-5)
    assert overall.clip_i == pytest.approx(1.0, abs=1e-5)
    real = result.summary[-1]
    assert real.prompt == metrics.REAL and real.dino == pytest.approx(1.0, abs=1e-5)


def test_dino_is_the_cls_token_and_scores_match_direct_forward(dino, tiny_backbones):
    from transformers import ViTImageProcessor, ViTModel

    gen, ref = pictures(3, seed=1), pictures(4, seed=2)
    result = metrics.evaluate(gen, ["p"] * 3, ref, dino=dino)
    model = ViTModel.from_pretrained(tiny_backbones["dino"], add_pooling_layer=False).eval()
    proc = ViTImageProcessor.from_pretrained(tiny_backbones["dino"])
    with torch.no_grad():
        cls = lambda imgs: model(**proc(images=imgs, return_tensors="pt")).last_hidden_state[:, 0].numpy()
        g, r = cls(gen), cls(ref)
    direct = [np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in r]) for a in g]
    assert [s.dino for s in result.images] == pytest.approx(direct, abs=1e-5)
    assert result.overall().dino == pytest.approx(np.mean(direct), abs=1e-5)
    assert all(s.clip_i is None and s.clip_t is None for s in result.images)
    # Different random pictures are not all alike to a random ViT: the metric is not constant.
    assert max(direct) - min(direct) > 1e-4


def test_clip_scores_match_clipmodel_forward_logits(clip, tiny_backbones):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    gen, ref = pictures(2, seed=3), pictures(2, seed=4)
    prompts = ["a photo of sks dog on a beach", "a sks dog in the snow"]
    result = metrics.evaluate(gen, prompts, ref, clip=clip)
    model = CLIPModel.from_pretrained(tiny_backbones["clip"]).eval()
    proc, tok = (
        CLIPImageProcessor.from_pretrained(tiny_backbones["clip"]),
        CLIPTokenizer.from_pretrained(tiny_backbones["clip"]),
    )
    with torch.no_grad():
        # CLIPModel's own forward: logits_per_image = exp(logit_scale) · cosine(image, text).
        out = model(
            pixel_values=proc(images=gen, return_tensors="pt")["pixel_values"],
            **tok(prompts, padding=True, return_tensors="pt"),
        )
        clip_t = (out.logits_per_image.diagonal() / model.logit_scale.exp()).tolist()
        ref_embeds = model(
            pixel_values=proc(images=ref, return_tensors="pt")["pixel_values"],
            **tok(prompts, padding=True, return_tensors="pt"),
        ).image_embeds
    assert [s.clip_t for s in result.images] == pytest.approx(clip_t, abs=1e-5)
    clip_i = (out.image_embeds @ ref_embeds.T).mean(dim=1).tolist()  # forward's embeds are unit vectors
    assert [s.clip_i for s in result.images] == pytest.approx(clip_i, abs=1e-5)
    assert [row.prompt for row in result.summary] == prompts + [metrics.OVERALL, metrics.REAL]


def test_clip_t_prompts_replace_the_text_only(clip):
    gen, ref = pictures(2, seed=5), pictures(2, seed=6)
    prompts = ["a photo of sks dog", "a photo of sks dog"]
    plain = metrics.evaluate(gen, prompts, ref, clip=clip)
    swapped = metrics.evaluate(gen, prompts, ref, clip=clip, clip_t_prompts=["a photo of dog"] * 2)
    assert [s.clip_i for s in swapped.images] == [s.clip_i for s in plain.images]
    assert [s.clip_t for s in swapped.images] != pytest.approx([s.clip_t for s in plain.images], abs=1e-7)


def test_subject_region_crops_to_the_mask_box(dino):
    gen, ref = pictures(2, seed=7), pictures(2, seed=8)
    mask = np.zeros((64, 64), np.float32)
    mask[10:30, 20:50] = 1.0
    crop = metrics.crop_to_mask(gen[0], mask, margin=0.1)
    assert crop.shape == (24, 36, 3)  # 20×30 box grown by 2 / 3 px on each side
    np.testing.assert_array_equal(crop, gen[0][8:32, 17:53])
    assert metrics.crop_to_mask(gen[0], mask[::2, ::2], margin=0.0).shape == (20, 30, 3)  # mask resized
    masked = metrics.evaluate(gen, ["p", "p"], ref, dino=dino, generated_masks=[mask], margin=0.1)
    cropped = metrics.evaluate([g[8:32, 17:53] for g in gen], ["p", "p"], ref, dino=dino)
    assert [s.dino for s in masked.images] == pytest.approx([s.dino for s in cropped.images], abs=1e-6)
    assert masked.settings["subject_region"] is True


def test_bad_inputs_are_named():
    gen = pictures(2)
    with pytest.raises(ValueError, match="1 prompts for 2 generated"):
        metrics.evaluate(gen, ["p"], gen)
    with pytest.raises(ValueError, match="1 CLIP-T prompts for 2 generated"):
        metrics.evaluate(gen, ["p", "p"], gen, clip_t_prompts=["q"])
    with pytest.raises(ValueError, match="generated image 0: the subject mask is empty"):
        metrics.evaluate(gen, ["p", "p"], gen, dino=object(), generated_masks=[np.zeros((64, 64))])
    with pytest.raises(ValueError, match="3 reference masks for 2 reference images"):
        metrics.evaluate(gen, ["p", "p"], gen, dino=object(), reference_masks=[np.ones((64, 64))] * 3)


def test_missing_backbone_folder_and_files_are_named(tmp_path, tiny_backbones):
    with pytest.raises(backbones.BackboneFolderError, match="DINO backbone folder not found.*config.json"):
        backbones.DinoBackbone.load(str(tmp_path / "nope"))
    partial = tmp_path / "clip"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_backbones["clip"] / "config.json").read_text())
    with pytest.raises(
        backbones.BackboneFolderError,
        match=r"lacks model.safetensors or .*preprocessor_config.json, tokenizer.json or vocab.json",
    ):
        backbones.ClipBackbone.load(str(partial))


def test_table_lists_prompts_overall_and_references():
    rows = metrics.summarize(
        [
            metrics.ImageScore("a", "p1", dino=0.5),
            metrics.ImageScore("b", "p1", dino=0.7),
            metrics.ImageScore("c", "p2", dino=0.9),
        ],
        metrics.SummaryRow(metrics.REAL, 4, dino=0.8),
    )
    assert [(r.prompt, r.n) for r in rows] == [("p1", 2), ("p2", 1), ("overall", 3), (metrics.REAL, 4)]
    assert rows[0].dino == pytest.approx(0.6) and rows[2].dino == pytest.approx(0.7)
    table = metrics.format_table(rows)
    assert "DINO" in table and "CLIP-I" not in table  # metrics nobody computed are left out
    assert "0.6000" in table and "0.7000" in table and "real (references)" in table


def test_brisque_ranks_distortions_of_a_natural_photo():
    import cv2
    import skimage.data

    photo = skimage.data.astronaut()  # shipped inside scikit-image: a real, undistorted photograph
    blurred = cv2.GaussianBlur(photo, (0, 0), 2.0)
    _, jpeg = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 5])
    jpeg = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    clean, blur, jpg = quality.brisque_scores([photo, blurred, jpeg])
    assert clean < 30 < blur and clean < 30 < jpg
    with pytest.raises(ValueError, match="at least 32 px"):
        quality.brisque_scores([photo[:16, :16]])


# Scores of the `brisque` package 0.2.0 (libsvm's svm_predict_probability on the same model file), computed once
# with that package installed; the pack evaluates the SVR itself so that no install needs a C compiler.
REFERENCE_BRISQUE = {
    "astronaut": 10.794862939073454,
    "astronaut_blur2": 64.27065728734848,
    "coffee": 3.0479264284917633,
    "coffee_noise20": 40.54287900681393,
    "astronaut_every8th": 47.527742091456474,
}


def test_brisque_matches_the_reference_package():
    import cv2
    import skimage.data

    photo, coffee = skimage.data.astronaut(), skimage.data.coffee()
    noise = np.random.default_rng(0).normal(0, 20, coffee.shape)
    images = {
        "astronaut": photo,
        "astronaut_blur2": cv2.GaussianBlur(photo, (0, 0), 2.0),
        "coffee": coffee,
        "coffee_noise20": np.clip(coffee + noise, 0, 255).astype(np.uint8),
        "astronaut_every8th": photo[::8, ::8],
    }
    got = dict(zip(images, quality.brisque_scores(list(images.values()))))
    assert got == pytest.approx(REFERENCE_BRISQUE, abs=1e-6)


def test_brisque_model_file_is_read_whole():
    model = quality.load_model()
    assert model.support_vectors.shape == (770, 36) and model.coefficients.shape == (770,)
    assert model.gamma == 0.05 and model.rho == -155.845
    assert np.all(model.feature_max > model.feature_min)
    with pytest.raises(ValueError, match="epsilon_svr with an rbf kernel"):
        quality.read_libsvm_model("svm_type c_svc\nkernel_type linear\nSV\n")


def test_brisque_in_evaluate_scores_generated_and_references():
    gen, ref = pictures(2, seed=9), pictures(3, seed=10)
    result = metrics.evaluate(gen, ["p", "q"], ref, quality=quality.brisque_scores)
    assert [s.brisque for s in result.images] == pytest.approx(quality.brisque_scores(gen))
    assert result.summary[-1].brisque == pytest.approx(np.mean(quality.brisque_scores(ref)))
    assert result.overall().dino is None
