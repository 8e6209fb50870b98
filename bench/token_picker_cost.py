"""Cost of RareTokenPicker on the tiny SDXL model against KSampler, in one process.

The reference is what a user would wire by hand for the very same images: one CLIPTextEncode per prompt, then
per chunk of ``SEED_BATCH`` seeds ComfyUI's ``common_ksampler`` (KSampler's own function) on a latent batch of
that size — the batch the picker samples at — with the same size, steps, cfg, sampler and scheduler, then
``VAE.decode`` (the picker scores decoded pixels, so decoding is part of both). The picker runs as its defaults
make it (``use_cache`` on) on an empty user folder each time, so it samples, scores and stores every image;
per-image cost = wall time / images sampled, for both.

Prints ``name: value`` lines:
- ``picker_per_image_vs_ksampler``: median over interleaved (picker, KSampler) pairs of the two wall times (each
  pair back to back, the order alternating, so load from other processes hits both alike).
- ``picker_per_image_vs_ksampler_best``: best picker run / best KSampler run.
- ``picker_cpu_vs_ksampler``: the same from process CPU time (steadier on a loaded machine with ``--threads 1``).
- ``picker_share_outside_sampling``: the part of a picker run's wall time spent outside sampling and decoding
  (scoring, scan, table, sheet, cache), from the table's own sampling total: one run, so robust to load.
- ``picker_cold_run_s`` / ``picker_cold_vs_warm``: the first run in a fresh process with an empty user folder
  (wordfreq's 12 word lists loaded, the vocabulary's Zipf table built and written), vs a warm run.
- ``zipf_table_from_file_s``: that table read back as after a restart (what every later first run pays).
- ``picker_cache_hit_vs_fresh``: a run served from the image cache vs a sampling run.
- ``seconds_per_candidate_tiny``: one candidate (all its seeds, sampled and decoded) at the node's defaults
  (1024², 10 steps, 8 seeds) on the tiny model: the table's s/cand.
- ``images_at_defaults``: images the node samples at its defaults (paper pool + scan + 2 references, × seeds),
  so a user can multiply by their own seconds per SDXL image.

Run: .venv/bin/python bench/token_picker_cost.py [--size 256] [--steps 10] [--seeds 8] [--candidates 3] [--scan 2]
     [--repeat 3] [--threads 1] [--skip-defaults]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = ROOT / ".cache" / "comfyui"


def _import_pack():
    """The repo as the package ``image_alchemy`` (the root never goes on sys.path: ComfyUI has a ``nodes``)."""
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import import_pack

    import_pack()


def _load_tiny_models(folder: Path):
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import TINY_PACK
    from tiny_models import factory

    factory.use_comfyui(COMFY_DIR)
    factory.write_tiny_sdxl(folder)
    import folder_paths

    folder_paths.add_model_folder_path("tiny_sdxl", str(folder))
    spec = importlib.util.spec_from_file_location("tiny_fixture_pack", TINY_PACK / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    return pack.load_tiny_model(), pack.load_tiny_clip(), pack.load_tiny_vae()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="sample size of the comparison runs (px)")
    p.add_argument("--steps", type=int, default=None, help="default: the node's default steps")
    p.add_argument("--seeds", type=int, default=None, help="default: the node's default seeds_per_candidate")
    p.add_argument("--candidates", type=int, default=3, help="candidates per run (paper words + scanned)")
    p.add_argument("--scan", type=int, default=2, help="how many of them the vocabulary scan draws")
    p.add_argument("--repeat", type=int, default=3, help="interleaved (picker, KSampler) pairs")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--skip-defaults", action="store_true", help="skip the 1024² candidate at the node's defaults")
    args = p.parse_args(argv)
    if not 0 <= args.scan <= args.candidates or args.candidates - args.scan > 3:
        p.error("--scan must be within --candidates, and at most 3 of them can be paper words")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        _run(args)


def _defaults(schema) -> dict:
    return {i.id: i.default for i in schema.inputs if getattr(i, "default", None) is not None}


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _sampling_seconds(table: str) -> float:
    """The score table's "… s sampling in all" total."""
    line = next(line for line in table.splitlines() if line.endswith("s sampling in all"))
    return float(line.rsplit(",", 1)[1].split()[0])


def _run(args) -> None:
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="token_bench_"))
    model, clip, vae = _load_tiny_models(work / "tiny")
    _import_pack()
    import folder_paths
    import torch
    from image_alchemy.alchemy import fingerprint_cache, tokens
    from image_alchemy.nodes.token_picker import RareTokenPicker, clip_tokenizers
    from image_alchemy.nodes.token_samples import SEED_BATCH, cache_directory

    import nodes as comfy_nodes  # ComfyUI's own nodes.py (ours is never on sys.path)

    defaults = _defaults(RareTokenPicker.define_schema())
    size, steps = args.size, args.steps or defaults["steps"]
    seeds = args.seeds or defaults["seeds_per_candidate"]
    template, class_word, cfg = "a photo of {token}", "dog", 5.0
    settings = dict(
        candidates=" ".join(["iklan", "ffin", "rrrr"][: args.candidates - args.scan]),
        vocabulary_scan=args.scan,
        prompt_template=template,
        seeds_per_candidate=seeds,
        seed=0,
        width=size,
        height=size,
        steps=steps,
        cfg=cfg,
        sampler_name="euler",
        scheduler="normal",
        class_word=class_word,
    )
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))

    def ksampler_images(prompt, seed_list, width, height):
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        for start in range(0, len(seed_list), SEED_BATCH):
            chunk = seed_list[start : start + SEED_BATCH]
            latent = {"samples": torch.zeros([len(chunk), 4, height // 8, width // 8])}
            (sampled,) = comfy_nodes.common_ksampler(
                model, chunk[0], steps, cfg, "euler", "normal", positive, negative, latent
            )
            vae.decode(sampled["samples"])

    # ComfyUI builds its sampler state (and torch its kernels for these shapes) on the first call: pay it here,
    # outside both measured paths, so the cold run below shows the picker's own one-time costs.
    ksampler_images("", list(range(SEED_BATCH)), size, size)

    runs = iter(range(10_000))

    def picker(use_cache=True, fresh_folder=True):
        """A run as the node's defaults make it (use_cache on); ``fresh_folder``: an empty image cache, so it
        samples, decodes, scores and stores every image."""
        if fresh_folder:
            folder_paths.set_user_directory(str(work / f"user{next(runs)}"))
        return _timed(lambda: RareTokenPicker.execute(model, clip, vae, use_cache=use_cache, **settings))

    cold_wall, cold_cpu, out = picker()
    rows = out.result[2].splitlines()[1 : 1 + args.candidates]
    prompts = [tokens.fill_template(template, class_word), ""] + [
        tokens.fill_template(template, r.split()[1]) for r in rows
    ]
    images = len(prompts) * seeds
    seed_list = list(range(seeds))

    def native():
        return _timed(lambda: [ksampler_images(prompt, seed_list, size, size) for prompt in prompts])

    pairs = []
    for r in range(args.repeat):
        if r % 2 == 0:
            pk, nt = picker(), native()
        else:
            nt, pk = native(), picker()
        pairs.append((pk, nt))
    ratio = statistics.median(pk[0] / nt[0] for pk, nt in pairs)
    best = min(pk[0] for pk, _ in pairs) / min(nt[0] for _, nt in pairs)
    cpu_ratio = statistics.median(pk[1] / nt[1] for pk, nt in pairs)
    warm = statistics.median(pk[0] for pk, _ in pairs)
    per_candidate = [float(r.split()[-1]) for r in pairs[-1][0][2].result[2].splitlines()[1 : 1 + args.candidates]]
    # Within one run, so load from other processes hits both parts alike: the run's wall time outside
    # sample_seeds (text encoding, sampling, decoding), from the table's own sampling total.
    outside = statistics.median(1.0 - _sampling_seconds(pk[2].result[2]) / pk[0] for pk, _ in pairs)

    folder_paths.set_user_directory(str(work / "user0"))  # the cold run's folder, holding the Zipf table file
    fingerprint_cache._ZIPF_MEMO.clear()  # as after a restart: the table comes from that file
    vocab_words = [w for _id, w in tokens.vocabulary_words(clip.tokenizer.clip_l.tokenizer.get_vocab())]
    from_file, from_file_cpu, _ = _timed(
        lambda: fingerprint_cache.cached_zipf_table(
            cache_directory(), vocab_words, tokens.ZIPF_LANGUAGES, tokens.zipf_table
        )
    )
    hit = min(picker(fresh_folder=False)[0] for _ in range(2))  # every image from the cold run's cache

    # Images at the node's defaults: the paper tokens that stay single + the default scan + 2 references.
    paper, _ = tokens.filter_candidates(
        tokens.PAPER_TOKENS, clip_tokenizers(clip), template=defaults["prompt_template"]
    )
    pool = len(paper) + defaults["vocabulary_scan"]
    at_defaults = (pool + 2) * defaults["seeds_per_candidate"]
    per_candidate_defaults = None
    if not args.skip_defaults:
        from image_alchemy.nodes.token_samples import sample_seeds

        d_seeds = [defaults["seed"] + i for i in range(defaults["seeds_per_candidate"])]
        per_candidate_defaults, _, _ = _timed(
            lambda: sample_seeds(
                model,
                clip,
                vae,
                tokens.fill_template(defaults["prompt_template"], "iklan"),
                negative,
                d_seeds,
                defaults["width"],
                defaults["height"],
                defaults["steps"],
                defaults["cfg"],
                defaults["sampler_name"],
                defaults["scheduler"],
            )
        )

    load_after = os.getloadavg()
    print(
        f"# tiny SDXL, CPU, torch threads {torch.get_num_threads()}, {size}px, {steps} steps, {seeds} seeds × "
        f"({args.candidates} candidates, {args.scan} of them scanned, + 2 references) = {images} images per run, "
        f"KSampler at batch {SEED_BATCH}"
    )
    print(f"# load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    for i, (pk, nt) in enumerate(pairs):
        print(
            f"# pair {i}: picker {pk[0]:.2f}s wall {pk[1]:.2f}s cpu ({pk[0] / images:.4f} s/image), "
            f"KSampler+decode {nt[0]:.2f}s wall {nt[1]:.2f}s cpu ({nt[0] / images:.4f} s/image)"
        )
    print(f"picker_per_image_vs_ksampler: {ratio:.3f}")
    print(f"picker_per_image_vs_ksampler_best: {best:.3f}")
    print(f"picker_cpu_vs_ksampler: {cpu_ratio:.3f}")
    print(f"picker_share_outside_sampling: {outside:.4f}")
    print(f"picker_cold_run_s: {cold_wall:.2f}")
    print(f"# cold run: {cold_cpu:.2f}s cpu (warm runs: {statistics.median(pk[1] for pk, _ in pairs):.2f}s cpu)")
    print(f"picker_cold_vs_warm: {cold_wall / warm:.3f}")
    print(f"zipf_table_from_file_s: {from_file:.4f}")
    print(f"# zipf table from file: {from_file_cpu:.4f}s cpu")
    print(f"picker_cache_hit_vs_fresh: {hit / warm:.4f}")
    print(f"seconds_per_candidate_tiny_{size}px: {min(per_candidate):.3f}")
    if per_candidate_defaults is not None:
        print(f"seconds_per_candidate_tiny: {per_candidate_defaults:.3f}")
    print(f"images_at_defaults: {at_defaults}")
    print(
        f"# at defaults: {pool} candidates ({len(paper)} paper + {defaults['vocabulary_scan']} scan) + 2 references "
        f"× {defaults['seeds_per_candidate']} seeds at {defaults['width']}², {defaults['steps']} steps; "
        f"chosen here: {out.result[0]}"
    )


if __name__ == "__main__":
    main()
