"""RareTokenPicker inside a real ComfyUI server on the tiny SDXL model, plus its cache and fingerprints."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from comfy_server import PromptFailed
from image_alchemy.alchemy import fingerprint_cache, token_scoring, tokens
from pack_import import TINY_PACK

POOL = "iklan ffin rrrr"


def picker_graph(candidates=POOL, seed=0, use_cache=False, seeds=2, steps=2, size=64, **extra):
    g = GraphBuilder()
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    picker = g.node(
        "ImageAlchemy_RareTokenPicker",
        model=loader.out(0),
        clip=loader.out(1),
        vae=loader.out(2),
        candidates=candidates,
        vocabulary_scan=extra.pop("vocabulary_scan", 0),
        prompt_template=extra.pop("prompt_template", "a photo of {token}"),
        seeds_per_candidate=seeds,
        seed=seed,
        width=size,
        height=size,
        steps=steps,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        use_cache=use_cache,
    )
    sheet = g.node("SaveImage", images=picker.out(1), filename_prefix="token_sheet")
    # PreviewAny shows a STRING in the history entry, so the test reads the outputs back.
    token = g.node("PreviewAny", source=picker.out(0))
    table = g.node("PreviewAny", source=picker.out(2))
    return g, sheet, token, table


def candidate_lines(table, cells=None):
    """The table's candidate rows (between the header and the legend), optionally cut to their first cells."""
    lines = table.splitlines()
    rows = lines[1 : next(i for i, line in enumerate(lines) if line.startswith("(prior:"))]
    return rows if cells is None else [line.split()[:cells] for line in rows]


def run_picker(comfy, **kwargs):
    g, sheet, token, table = picker_graph(**kwargs)
    entry = comfy.run(g.finalize())
    text = lambda node: entry["outputs"][node.id]["text"][0]
    return text(token), np.asarray(comfy.output_images(entry, sheet.id)[0]), text(table)


def test_picks_a_pool_token_with_a_full_contact_sheet_and_the_same_answer_twice(comfy):
    token, sheet, table = run_picker(comfy, candidates=POOL + " immen", seed=5)
    assert token in POOL.split()
    # 2 references + 3 accepted candidates (rows) × 2 seeds (columns) of 64 px, after the label column.
    assert sheet.shape == (5 * 64, token_scoring.LABEL_WIDTH + 2 * 64, 3)
    assert table.splitlines()[1].split()[1] == token
    assert table.splitlines()[0].split() == ["rank", "token", "ssim", "prior", "source", "zipf", "s/cand"]
    assert "immen: 2 tokens in clip_l (paper)" in table
    assert "references (ssim): class word" in table
    assert "10 images: (3 candidates + 2 references) × 2 seeds at 64×64, 2 steps; 10 sampled now" in table
    for line in candidate_lines(table):
        assert line.split()[4] == "paper" and float(line.split()[6]) > 0  # seconds spent on that candidate
        assert line.split()[3] == "-" or 0.0 <= float(line.split()[3]) <= 1.0
    # The first row of the sheet is the class word's reference: its label cell, then its seed images.
    assert sheet[1:64, : token_scoring.LABEL_WIDTH].max() > 200
    # Same seed, candidates written differently: ComfyUI's own output cache cannot answer, so this samples again.
    again_token, again_sheet, again_table = run_picker(comfy, candidates="rrrr, ffin\niklan, immen", seed=5)
    assert again_token == token
    assert sorted(candidate_lines(again_table, cells=6)) == sorted(candidate_lines(table, cells=6))  # not seconds


def test_second_run_reads_the_cache(comfy):
    cache_dir = comfy.base_dir / "user" / "image_alchemy" / "token_cache"
    before = set(cache_dir.glob("*.safetensors")) if cache_dir.exists() else set()
    first = run_picker(comfy, seed=11, use_cache=True)
    entries = set(cache_dir.glob("*.safetensors")) - before
    assert len(entries) == 5  # one per candidate and per reference
    mtimes = {p: p.stat().st_mtime_ns for p in entries}
    # Another spelling of the same list re-executes the node; every candidate must come from the cache.
    second = run_picker(comfy, candidates="ffin rrrr iklan", seed=11, use_cache=True)
    assert {p: p.stat().st_mtime_ns for p in entries} == mtimes
    assert set(cache_dir.glob("*.safetensors")) - before == entries
    assert second[0] == first[0]
    assert candidate_lines(second[2], cells=4) == candidate_lines(first[2], cells=4)
    assert {line.split()[-1] for line in candidate_lines(second[2])} == {"cached"}
    assert "0 sampled now" in second[2]


def test_vocabulary_scan_adds_candidates(comfy):
    token, sheet, table = run_picker(comfy, candidates="iklan", vocabulary_scan=2, seed=2)
    assert sheet.shape[0] == (2 + 3) * 64
    assert sorted(line.split()[4] for line in candidate_lines(table)) == ["paper", "scan", "scan"]
    for line in candidate_lines(table):
        if line.split()[4] == "scan":
            assert float(line.split()[5].split("(")[0]) < tokens.MAX_ZIPF
    # The words the scan drew and passed over are in the table, each with why (the same seed draws the same).
    from transformers import CLIPTokenizer

    clip = CLIPTokenizer.from_pretrained(Path(comfy.comfy_dir) / "comfy" / "sd1_tokenizer")
    tokenize = lambda w: clip(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    scanned, passed_over = tokens.scan_vocabulary_report(
        clip.get_vocab(),
        {"clip_l": tokenize, "clip_g": tokenize},
        2,
        2,
        exclude=["iklan"],
        template="a photo of {token}",
    )
    assert sorted(scanned) == sorted(line.split()[1] for line in candidate_lines(table) if line.split()[4] == "scan")
    assert passed_over
    for r in passed_over:
        kind, _, detail = r.reason.partition(": ")
        (line,) = [line for line in table.splitlines() if line.startswith(f"  scan, {kind} (")]
        assert f"{r.word} ({detail})" in line


def test_user_errors_name_the_node_and_the_fix(comfy):
    g, *_ = picker_graph(candidates="immen sks")
    with pytest.raises(PromptFailed, match="RareTokenPicker: none of the candidates"):
        comfy.run(g.finalize())
    g, *_ = picker_graph(prompt_template="a photo of sks")
    with pytest.raises(PromptFailed, match=r"no \{token\} placeholder"):
        comfy.run(g.finalize())


def test_interrupt_stops_the_scan(comfy):
    cache_dir = comfy.base_dir / "user" / "image_alchemy" / "token_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    before = set(cache_dir.glob("*.safetensors"))
    g, *_ = picker_graph(candidates="iklan", vocabulary_scan=24, seed=99, use_cache=True, steps=4, size=128)
    prompt_id = comfy.queue(g.finalize())
    deadline = time.monotonic() + 120
    while not set(cache_dir.glob("*.safetensors")) - before:  # first candidate done: the scan is under way
        assert time.monotonic() < deadline, "the scan never started"
        time.sleep(0.02)
    comfy.interrupt()
    with pytest.raises(PromptFailed) as failed:
        comfy.wait(prompt_id)
    assert any(m[0] == "execution_interrupted" for m in failed.value.details["status"]["messages"])
    assert len(set(cache_dir.glob("*.safetensors")) - before) < 27  # stopped before 25 candidates + 2 references
    assert comfy.alive()


def test_fingerprint_sees_weights_patches_and_shapes():
    a = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(4)}
    fp = fingerprint_cache.fingerprint_tensors(a.items())
    assert fp == fingerprint_cache.fingerprint_tensors(reversed(list(a.items())))  # order-independent
    changed = {**a, "w": a["w"] + 1e-3}
    assert fingerprint_cache.fingerprint_tensors(changed.items()) != fp
    assert fingerprint_cache.fingerprint_tensors({**a, "b": torch.zeros(2, 2)}.items()) != fp
    lora = {"w": [(1.0, ("lora", (torch.ones(2, 3), torch.ones(3, 2))), 1.0, None, None)]}
    weaker = {"w": [(0.5, ("lora", (torch.ones(2, 3), torch.ones(3, 2))), 1.0, None, None)]}
    assert len({fingerprint_cache.fingerprint_value(p) for p in ({}, lora, weaker)}) == 3


def test_image_cache_round_trip_is_atomic_and_tolerates_corruption(tmp_path):
    cache = fingerprint_cache.ImageCache(tmp_path / "c")
    images = np.random.default_rng(0).random((2, 8, 8, 3))
    key = fingerprint_cache.cache_key(models="m", prompt="a photo of iklan", seeds=[0, 1])
    assert cache.load(key) is None
    cache.store(key, images, {"prompt": "a photo of iklan"})
    np.testing.assert_allclose(cache.load(key), np.round(images * 255) / 255, atol=1e-6)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.safetensors"]  # no temp file left
    cache.path(key).write_bytes(b"not a safetensors file")
    assert cache.load(key) is None
    assert key != fingerprint_cache.cache_key(models="m", prompt="a photo of iklan", seeds=[0, 2])


def test_model_fingerprint_follows_loras_not_in_place_patching(comfy_dir):
    from tiny_models import factory

    factory.use_comfyui(comfy_dir)
    import comfy.model_patcher
    import comfy.ops
    from image_alchemy.nodes.token_samples import patcher_fingerprint

    cpu = torch.device("cpu")
    layer = comfy.ops.disable_weight_init.Linear(4, 4)  # ComfyUI's own op, which patch_model patches
    torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(0))
    torch.nn.init.zeros_(layer.bias)
    base = comfy.model_patcher.ModelPatcher(torch.nn.Sequential(layer), load_device=cpu, offload_device=cpu)
    lora = base.clone()
    lora.add_patches({"0.weight": ("diff", (torch.full((4, 4), 0.5),))}, strength_patch=0.8)
    fp_base, fp_lora = patcher_fingerprint(base), patcher_fingerprint(lora)
    assert fp_base != fp_lora
    weight_before = lora.model[0].weight.detach().clone()
    lora.patch_model()  # ComfyUI writes the LoRA into the weights in place while the model is loaded
    try:
        assert not torch.equal(lora.model[0].weight, weight_before)
        assert patcher_fingerprint(lora) == fp_lora
    finally:
        lora.unpatch_model()
    assert patcher_fingerprint(base) == fp_base


@pytest.fixture(scope="module")
def in_process(comfy_dir, tiny_models):
    """The tiny MODEL / CLIP / VAE built in this process by the fixture pack's loaders, and ComfyUI's nodes.py."""
    import importlib.util

    from tiny_models import factory

    factory.use_comfyui(comfy_dir)
    import folder_paths

    folder_paths.add_model_folder_path("tiny_sdxl", str(tiny_models["unet"].parent))
    spec = importlib.util.spec_from_file_location("tiny_fixture_pack", TINY_PACK / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    # ComfyUI's nodes.py by path: `python -m pytest` puts the repo root (our own nodes/) first on sys.path.
    spec = importlib.util.spec_from_file_location("comfyui_core_nodes", comfy_dir / "nodes.py")
    core_nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core_nodes)
    return pack.load_tiny_model(), pack.load_tiny_clip(), pack.load_tiny_vae(), core_nodes


def test_batched_seeds_match_ksampler_one_seed_at_a_time(in_process):
    """Image i of a candidate is exactly what KSampler makes with seed i (deterministic sampler)."""
    from image_alchemy.nodes.token_samples import SEED_BATCH, sample_seeds

    model, clip, vae, core_nodes = in_process
    with torch.inference_mode():
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        seeds = list(range(7, 8 + SEED_BATCH))  # more than one chunk of seeds
        batched = sample_seeds(model, clip, vae, "a photo of iklan", negative, seeds, 64, 64, 2, 5.0, "euler", "normal")
        assert len(batched) == len(seeds)
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of iklan"))
        for i, seed in enumerate(seeds):
            latent = {"samples": torch.zeros([1, 4, 8, 8])}
            (sampled,) = core_nodes.common_ksampler(model, seed, 2, 5.0, "euler", "normal", positive, negative, latent)
            single = vae.decode(sampled["samples"])[0].clamp(0, 1).numpy()
            np.testing.assert_allclose(batched[i], single, atol=1.5 / 255)
    assert np.abs(batched[0] - batched[1]).max() > 0.05  # the seeds differ


def tiny_clip_vision(tmp_path):
    """A ComfyUI CLIP vision model (the CLIP_VISION type) with a tiny config and seeded weights."""
    import json

    import comfy.clip_vision

    config = {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": 32,
        "image_size": 64,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 16,
        "projection_dim": 16,
        "torch_dtype": "float32",
    }
    (tmp_path / "vision.json").write_text(json.dumps(config))
    vision = comfy.clip_vision.ClipVisionModel(str(tmp_path / "vision.json"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # ComfyUI's ops leave weights uninitialized
        for name, param in vision.model.named_parameters():
            param.copy_(
                torch.ones_like(param)
                if "layer_norm" in name or "layrnorm" in name
                else torch.randn(param.shape, generator=gen) * 0.1
            )
    return vision


def test_clip_vision_embeddings_join_the_score(in_process, tmp_path):
    from image_alchemy.nodes.token_picker import RareTokenPicker, image_embeddings

    model, clip, vae, _ = in_process
    vision = tiny_clip_vision(tmp_path)
    images = np.random.default_rng(0).random((3, 64, 64, 3))
    with torch.inference_mode():
        embeds = image_embeddings(vision, images)
        assert embeds.shape == (3, 16)
        assert token_scoring.mean_pairwise_cosine(image_embeddings(vision, images[[0, 0, 0]])) == pytest.approx(1.0)
        out = RareTokenPicker.execute(
            model,
            clip,
            vae,
            candidates="iklan ffin",
            vocabulary_scan=0,
            prompt_template="a photo of {token}",
            seeds_per_candidate=2,
            seed=0,
            width=64,
            height=64,
            steps=2,
            cfg=5.0,
            sampler_name="euler",
            scheduler="normal",
            use_cache=False,
            clip_vision=vision,
        )
    token, sheet, table = out.result
    assert token in ("iklan", "ffin") and tuple(sheet.shape) == (1, 4 * 64, token_scoring.LABEL_WIDTH + 2 * 64, 3)
    header, first = table.splitlines()[:2]
    assert header.split()[:4] == ["rank", "token", "embed_cos", "prior"]  # the embeddings replace SSIM
    assert "references (embed_cos): class word" in table
    # The table's similarity is the embeddings' mean cosine of that candidate's images, sampled the same way.
    from image_alchemy.nodes.token_samples import sample_seeds

    with torch.inference_mode():
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        images = sample_seeds(
            model, clip, vae, f"a photo of {token}", negative, [0, 1], 64, 64, 2, 5.0, "euler", "normal"
        )
        expected = token_scoring.mean_pairwise_cosine(image_embeddings(vision, images))
        references = [
            sample_seeds(model, clip, vae, prompt, negative, [0, 1], 64, 64, 2, 5.0, "euler", "normal")
            for prompt in ("a photo of dog", "")
        ]
    assert float(first.split()[2]) == pytest.approx(expected, abs=2e-4)
    # The sheet's first two rows are the references (class word, then empty prompt), below each row's divider.
    for row, ref in enumerate(references):
        for i in range(2):
            cell = sheet[
                0,
                row * 64 + 1 : (row + 1) * 64,
                token_scoring.LABEL_WIDTH + i * 64 : token_scoring.LABEL_WIDTH + (i + 1) * 64,
            ].numpy()
            np.testing.assert_allclose(cell, ref[i][1:], atol=1e-6)
    cal = token_scoring.Calibration(
        *(token_scoring.mean_pairwise_cosine(image_embeddings(vision, r)) for r in references)
    )
    assert f"class word {cal.class_word:.4f} → prior 1, empty prompt {cal.empty:.4f} → prior 0" in table
