"""RareTokenPicker: the placeholder word the model has the least prior for (paper 001 §3.1; docs/DESIGN.md §4.1)."""

from __future__ import annotations

import logging
import os
import time

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from ..alchemy import fingerprint_cache, layout, token_scoring, tokens
from .checks import node_error

log = logging.getLogger(__name__)

NODE = "RareTokenPicker"
CACHE_SUBDIR = os.path.join("image_alchemy", "token_cache")
# Seeds sampled together: with CFG the UNet runs twice this batch, so 8 seeds at 1024² would hold 16 SDXL
# activations at once; chunks of 4 halve that. The noise is drawn per seed: the images do not depend on chunking.
SEED_BATCH = 4


def cache_directory() -> str:
    # The user folder survives restarts (ComfyUI empties temp/ at every start).
    return os.path.join(folder_paths.get_user_directory(), CACHE_SUBDIR)


def _word_tokenizer(sd_tokenizer):
    """``word -> ids`` without start/end tokens, from one of ComfyUI's SDTokenizer objects."""
    hf = sd_tokenizer.tokenizer
    return lambda word: hf(word, add_special_tokens=False)["input_ids"]


def clip_tokenizers(clip) -> dict:
    """The wired CLIP's tokenizers by name (clip_l and clip_g for SDXL; whatever SD1-style ones it has)."""
    found = {
        name: _word_tokenizer(getattr(clip.tokenizer, name))
        for name in ("clip_l", "clip_g")
        if hasattr(getattr(clip.tokenizer, name, None), "tokenizer")
    }
    if not found:
        raise ValueError(
            f"{NODE}: the wired CLIP has no CLIP BPE tokenizer (clip_l / clip_g); "
            "wire the CLIP output of an SDXL or SD1.x checkpoint loader."
        )
    return found


def patcher_fingerprint(patcher) -> str:
    """Weights as loaded from disk (ComfyUI keeps them in ``backup`` while patched in place) plus the pending
    patches (LoRAs, with strengths), object patches and model options, so a LoRA'd clone hashes differently."""
    sd = patcher.model_state_dict()
    named = [(k, patcher.backup[k].weight if k in patcher.backup else v) for k, v in sd.items()]
    return fingerprint_cache.fingerprint_value(
        [fingerprint_cache.fingerprint_tensors(named), patcher.patches, patcher.object_patches, patcher.model_options]
    )


def models_fingerprint(model, clip, vae) -> str:
    vae_sd = vae.first_stage_model.state_dict()
    return fingerprint_cache.fingerprint_value(
        [
            patcher_fingerprint(model),
            patcher_fingerprint(clip.patcher),
            getattr(clip, "layer_idx", None),
            fingerprint_cache.fingerprint_tensors(vae_sd.items()),
        ]
    )


def _interrupt_check(*_args):
    comfy.model_management.throw_exception_if_processing_interrupted()


def sample_seeds(
    model,
    clip,
    vae,
    prompt: str,
    negative,
    seeds: list[int],
    width: int,
    height: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
) -> np.ndarray:
    """One image per seed, as KSampler would make with that seed; up to SEED_BATCH seeds share one batch."""
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
    out = []
    for start in range(0, len(seeds), SEED_BATCH):
        chunk = seeds[start : start + SEED_BATCH]
        latent = torch.zeros(
            [len(chunk), 4, height // 8, width // 8], device=comfy.model_management.intermediate_device()
        )
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        # Per-seed noise, so image i is the batch-1 KSampler image for seeds[i] (ancestral samplers aside).
        noise = torch.cat([comfy.sample.prepare_noise(latent[i : i + 1], seed) for i, seed in enumerate(chunk)])
        samples = comfy.sample.sample(
            model,
            noise,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            latent,
            denoise=1.0,
            callback=_interrupt_check,
            disable_pbar=True,
            seed=chunk[0],
        )
        images = vae.decode(samples)
        images = images.reshape(-1, *images.shape[-3:])  # video VAEs add a frame axis
        # Quantized like a saved PNG, so a fresh run and a cache hit score the very same pixels.
        out.append(np.round(layout.to_numpy(images.clamp(0, 1)) * 255.0) / 255.0)
    return np.concatenate(out)


def image_embeddings(clip_vision, images: np.ndarray) -> np.ndarray:
    out = clip_vision.encode_image(layout.to_torch(images).float())
    embeds = out["image_embeds"] if out["image_embeds"] is not None else out["last_hidden_state"][:, 0]
    return layout.to_numpy(embeds)


class RareTokenPicker(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_RareTokenPicker",
            display_name="Rare Token Picker",
            category="Image Alchemy/training",
            description=(
                "Chooses the placeholder word for a new subject: keeps candidates that stay ONE token in every "
                "tokenizer of the wired CLIP (the vocabulary scan also drops words common in 12 languages), "
                "samples each with several seeds on your model and measures how alike its images are (CLIP "
                "vision embeddings when wired, else SSIM), calibrated between the class word (prior 1) and the "
                "empty prompt (prior 0). Picks the lowest prior. Results are cached per model, prompt and "
                "settings."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="The model you will train the LoRA on (its prior is what is measured)."
                ),
                io.Clip.Input("clip", tooltip="Its text encoder; its tokenizers decide which words are single tokens."),
                io.Vae.Input("vae", tooltip="Decodes the sampled latents for scoring and the contact sheet."),
                io.String.Input(
                    "candidates",
                    multiline=True,
                    default=" ".join(tokens.PAPER_TOKENS),
                    tooltip="Words to test (spaces, commas or new lines). Default: the paper's 28 "
                    "tokens; words that split into several tokens are rejected and listed.",
                ),
                io.Int.Input(
                    "vocabulary_scan",
                    default=tokens.DEFAULT_SCAN,
                    min=0,
                    max=256,
                    tooltip="Extra candidates drawn (by seed) from the rarest 4–5 letter single-token "
                    "words of the tokenizer's vocabulary, minus every word with a Zipf "
                    f"frequency ≥ {tokens.MAX_ZIPF} in any of {', '.join(tokens.ZIPF_LANGUAGES)} "
                    "(dictionary words and names carry a prior).",
                ),
                io.String.Input(
                    "prompt_template",
                    default="a photo of {token}",
                    tooltip="Prompt for each candidate; {token} is replaced by the word.",
                ),
                io.Int.Input(
                    "seeds_per_candidate",
                    default=8,
                    min=2,
                    max=64,
                    tooltip="Images per candidate and per reference (seeds seed … seed+N−1, the same "
                    "for all); 8 seeds = 28 image pairs per word.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    tooltip="First seed; the same seed gives the same choice.",
                ),
                io.Int.Input(
                    "width",
                    default=1024,
                    min=64,
                    max=2048,
                    step=8,
                    tooltip="Sample width: the model's native size (SDXL: 1024). Smaller sizes are off "
                    "its distribution and blur every word alike.",
                ),
                io.Int.Input("height", default=1024, min=64, max=2048, step=8, tooltip="Sample height (SDXL: 1024)."),
                io.Int.Input(
                    "steps",
                    default=10,
                    min=1,
                    max=200,
                    tooltip="Sampling steps per image; the composition, which is what is compared, is "
                    "set in the first steps.",
                ),
                io.Float.Input("cfg", default=5.0, min=0.0, max=30.0, step=0.1, tooltip="Classifier-free guidance."),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="euler",
                    tooltip="Sampler, as in KSampler.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="normal",
                    tooltip="Scheduler, as in KSampler.",
                ),
                io.Boolean.Input(
                    "use_cache",
                    default=True,
                    tooltip="Reuse images sampled before for the same model, candidate and settings "
                    "(stored under user/image_alchemy/token_cache).",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="Optional image encoder (Load CLIP Vision): when wired, the score is "
                    "the cosine similarity of its image embeddings (meaning) instead of "
                    "pixel SSIM (layout).",
                ),
                io.String.Input(
                    "class_word",
                    default="dog",
                    optional=True,
                    tooltip="The subject's class (dog, person, mug): its images are the strong-prior "
                    "reference (prior 1); the empty prompt's are the no-prior one (prior 0).",
                ),
            ],
            outputs=[
                io.String.Output("token", display_name="token", tooltip="The chosen placeholder word (least prior)."),
                io.Image.Output(
                    "contact_sheet",
                    display_name="contact_sheet",
                    tooltip="Rows × seeds, labeled: first the two references (class word, empty prompt), "
                    "then the candidates ranked best first.",
                ),
                io.String.Output(
                    "score_table",
                    display_name="score_table",
                    tooltip="Every candidate's similarity (CLIP vision or SSIM), its prior in [0, 1] between "
                    "the two references, Zipf frequency, cost and rank, plus the rejected words "
                    "and why.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        candidates,
        vocabulary_scan,
        prompt_template,
        seeds_per_candidate,
        seed,
        width,
        height,
        steps,
        cfg,
        sampler_name,
        scheduler,
        use_cache,
        clip_vision=None,
        class_word="dog",
    ) -> io.NodeOutput:
        try:
            tokens.fill_template(prompt_template, "x")  # fails early, naming the fix, before any sampling
        except ValueError as e:
            raise node_error(NODE, e) from e
        class_word = class_word.strip()
        if not class_word:
            raise ValueError(f"{NODE}: class_word is empty; write the subject's class, e.g. dog, person, mug.")
        tokenizers = clip_tokenizers(clip)
        words = tokens.parse_candidates(candidates)
        accepted, rejected = tokens.filter_candidates(words, tokenizers, template=prompt_template)
        source = {w: "paper" if w in tokens.PAPER_TOKENS else "yours" for w in accepted}
        vocab = getattr(clip.tokenizer, next(iter(tokenizers))).tokenizer.get_vocab()
        # Every word that can be one token is in this table, so neither the scan nor the table's zipf column
        # loads wordfreq's 12 word lists again (seconds per process start, milliseconds from the file).
        vocab_words = tokens.vocabulary_words(vocab)
        frequencies = fingerprint_cache.cached_zipf_table(
            cache_directory(), (w for _id, w in vocab_words), tokens.ZIPF_LANGUAGES, tokens.zipf_table
        )
        if vocabulary_scan:
            scanned = tokens.scan_vocabulary(
                vocab,
                tokenizers,
                vocabulary_scan,
                seed,
                exclude=words,
                template=prompt_template,
                frequencies=frequencies,
                words=vocab_words,
            )
            accepted += scanned
            source.update({w: "scan" for w in scanned})
        if not accepted:
            raise ValueError(
                f"{NODE}: none of the candidates is a 4–5 letter word that stays one token in "
                f"{' and '.join(tokenizers)} ({len(rejected)} rejected). Add other words or set "
                "vocabulary_scan above 0."
            )
        for r in rejected:
            log.info("%s: rejected %r: %s", NODE, r.word, r.reason)

        seeds = [(seed + i) % 2**64 for i in range(seeds_per_candidate)]  # torch seeds are 64-bit
        settings = dict(
            seeds=seeds, width=width, height=height, steps=steps, cfg=cfg, sampler=sampler_name, scheduler=scheduler
        )
        cache = fingerprint_cache.ImageCache(cache_directory())
        models_fp = models_fingerprint(model, clip, vae)
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))

        def images_for(prompt):
            """(images, seconds spent sampling; None when served from the cache)."""
            key = fingerprint_cache.cache_key(models=models_fp, prompt=prompt, **settings)
            images = cache.load(key) if use_cache else None
            if images is not None:
                return images, None
            start = time.perf_counter()
            images = sample_seeds(
                model, clip, vae, prompt, negative, seeds, width, height, steps, cfg, sampler_name, scheduler
            )
            spent = time.perf_counter() - start
            if use_cache:
                cache.store(key, images, {"prompt": prompt, "settings": repr(settings)})
            return images, spent

        def measured(images):
            embeddings = image_embeddings(clip_vision, images) if clip_vision is not None else None
            return token_scoring.similarity(images, embeddings)[0]

        # References first, sampled exactly like the candidates: the class word (strong prior) and the empty
        # prompt, i.e. the unconditioned model (no prior).
        pbar = comfy.utils.ProgressBar(len(accepted) + 2)
        references, spent = {}, {}
        for i, (name, prompt) in enumerate(
            [("class", tokens.fill_template(prompt_template, class_word)), ("empty", "")]
        ):
            _interrupt_check()
            references[name], spent[name] = images_for(prompt)
            pbar.update_absolute(i + 1)
        calibration = token_scoring.Calibration(measured(references["class"]), measured(references["empty"]))
        if not calibration.separates:
            log.warning(
                "%s: the images of %r are not more alike than the empty prompt's (%.4f vs %.4f): the prior "
                "cannot be calibrated; ranking by raw similarity",
                NODE,
                class_word,
                calibration.class_word,
                calibration.empty,
            )

        scores, images_by_token = [], {}
        for i, word in enumerate(accepted):
            _interrupt_check()
            images, spent[word] = images_for(tokens.fill_template(prompt_template, word))
            embeddings = image_embeddings(clip_vision, images) if clip_vision is not None else None
            scores.append(token_scoring.score_candidate(word, images, embeddings, calibration))
            images_by_token[word] = images
            pbar.update_absolute(i + 3)
        sampled = [s for s in spent.values() if s is not None]
        log.info("%s: %d candidates + 2 references, %d sets from cache", NODE, len(accepted), len(spent) - len(sampled))

        ranked = token_scoring.rank(scores)
        label = lambda s: f"{s.prior:.3f}" if s.prior is not None else f"sim {s.similarity:.3f}"
        rows = [(f"ref {class_word}\nprior 1", references["class"]), ("ref empty\nprior 0", references["empty"])]
        rows += [(f"#{n} {s.token}\n{label(s)}", images_by_token[s.token]) for n, s in enumerate(ranked, 1)]
        sheet = layout.to_torch(token_scoring.contact_sheet(rows))[None]  # H×W×C → IMAGE batch of 1 (BHWC)
        table = token_scoring.score_table(
            ranked,
            [(r.word, r.reason + (" (paper)" if r.word in tokens.PAPER_TOKENS else "")) for r in rejected],
            calibration,
            _table_notes(accepted, source, spent, frequencies),
            _table_footer(len(accepted), seeds_per_candidate, sampled, width, height, steps),
        )
        return io.NodeOutput(ranked[0].token, sheet, table)


def _table_notes(words, source, spent, frequencies) -> dict:
    notes = {"": ["source", "zipf", "s/cand"]}
    for word in words:
        zipf, lang = frequencies[word] if word in frequencies else tokens.word_frequency(word)
        seconds = "cached" if spent[word] is None else f"{spent[word]:.2f}"
        notes[word] = [source[word], f"{zipf:.2f}{'(' + lang + ')' if zipf else ''}", seconds]
    return notes


def _table_footer(n_words, n_seeds, sampled, width, height, steps) -> list[str]:
    images = (n_words + 2) * n_seeds
    lines = [
        f"{images} images: ({n_words} candidates + 2 references) × {n_seeds} seeds at {width}×{height}, "
        f"{steps} steps; {len(sampled) * n_seeds} sampled now, the rest from the cache"
    ]
    if sampled:
        per_set = sum(sampled) / len(sampled)
        lines.append(
            f"cost: {per_set:.2f} s per candidate ({per_set / n_seeds:.3f} s per image), "
            f"{sum(sampled):.1f} s sampling in all"
        )
    return lines


NODES = [RareTokenPicker]
