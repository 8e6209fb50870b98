"""RareTokenPicker: the placeholder word the model has the least prior for (paper 001 §3.1; docs/DESIGN.md §4.1)."""

from __future__ import annotations

import logging

import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..alchemy import fingerprint_cache, layout, token_scoring, tokens
from .checks import node_error
from .search import search_aliases
from .token_samples import CandidateImages, cache_directory, image_embeddings, interrupt_check

log = logging.getLogger(__name__)

NODE = "RareTokenPicker"


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
        raise node_error(
            NODE, "the wired CLIP has no CLIP BPE tokenizer (clip_l / clip_g); wire the CLIP output of an SDXL or "
            "SD1.x checkpoint loader.",
        )  # fmt: skip
    return found


class RareTokenPicker(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_RareTokenPicker",
            **search_aliases("rare token", "trigger word", "dreambooth token", "pick token"),
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
                    "(dictionary words and names carry a prior), the end pieces of such words ('useum' "
                    f"of museum) and community placeholders ({', '.join(tokens.COMMUNITY_TOKENS)}); the "
                    "score table lists the words passed over and why.",
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
        class_word = _check_words(prompt_template, class_word)
        tokenizers = clip_tokenizers(clip)
        accepted, rejected, source, frequencies = _candidates(
            clip, tokenizers, candidates, vocabulary_scan, seed, prompt_template
        )
        seeds = [(seed + i) % 2**64 for i in range(seeds_per_candidate)]  # torch seeds are 64-bit
        samples = CandidateImages(
            model, clip, vae, seeds, width, height, steps, cfg, sampler_name, scheduler, use_cache
        )
        pbar = comfy.utils.ProgressBar(len(accepted) + 2)
        references, spent, calibration = _calibrate(samples, clip_vision, prompt_template, class_word, pbar)
        scores, images_by_token = [], {}
        for i, word in enumerate(accepted):
            interrupt_check()
            images, spent[word] = samples.images_for(tokens.fill_template(prompt_template, word))
            embeddings = image_embeddings(clip_vision, images) if clip_vision is not None else None
            scores.append(token_scoring.score_candidate(word, images, embeddings, calibration))
            images_by_token[word] = images
            pbar.update_absolute(i + 3)
        sampled = [s for s in spent.values() if s is not None]
        log.info("%s: %d candidates + 2 references, %d sets from cache", NODE, len(accepted), len(spent) - len(sampled))
        ranked = token_scoring.rank(scores)
        table = token_scoring.score_table(
            ranked,
            [(r.word, r.reason + (" (paper)" if r.word in tokens.PAPER_TOKENS else "")) for r in rejected],
            calibration,
            token_scoring.table_notes(accepted, source, spent, frequencies),
            token_scoring.table_footer(len(accepted), seeds_per_candidate, sampled, width, height, steps),
        )
        rows = token_scoring.sheet_rows(ranked, references, images_by_token, class_word)
        sheet = layout.to_torch(token_scoring.contact_sheet(rows))[None]  # H×W×C → IMAGE batch of 1 (BHWC)
        return io.NodeOutput(ranked[0].token, sheet, table)


def _check_words(prompt_template: str, class_word: str) -> str:
    """Fails early, naming the fix, before any sampling; returns the class word stripped."""
    try:
        tokens.fill_template(prompt_template, "x")
    except ValueError as e:
        raise node_error(NODE, e) from e
    class_word = class_word.strip()
    if not class_word:
        raise node_error(NODE, "class_word is empty; write the subject's class, e.g. dog, person, mug.")
    return class_word


def _candidates(clip, tokenizers, candidates, vocabulary_scan, seed, prompt_template):
    """The words to score (the user's that pass the filter, then the scan's), the rejected ones and why, where each
    word came from, and the Zipf table of the vocabulary."""
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
    for r in rejected:  # the scan's passed-over words are in the table only
        log.info("%s: rejected %r: %s", NODE, r.word, r.reason)
    if vocabulary_scan:
        word_ends = fingerprint_cache.cached_word_end_table(
            cache_directory(), (w for _id, w in vocab_words), tokens.ZIPF_LANGUAGES, tokens.MAX_ZIPF,
            tokens.word_end_table,
        )  # fmt: skip
        scanned, passed_over = tokens.scan_vocabulary_report(
            vocab,
            tokenizers,
            vocabulary_scan,
            seed,
            exclude=words,
            template=prompt_template,
            frequencies=frequencies,
            words=vocab_words,
            word_ends=word_ends,
        )
        accepted += scanned
        source.update({w: "scan" for w in scanned})
        rejected += [tokens.Rejected(*row) for row in token_scoring.passed_over_rows(passed_over)]
    if not accepted:
        raise node_error(
            NODE,
            f"none of the candidates is a 4–5 letter word that stays one token in "
            f"{' and '.join(tokenizers)} ({len(rejected)} rejected). Add other words or set "
            "vocabulary_scan above 0.",
        )
    return accepted, rejected, source, frequencies


def _calibrate(samples: CandidateImages, clip_vision, prompt_template: str, class_word: str, pbar):
    """References first, sampled exactly like the candidates: the class word (strong prior) and the empty
    prompt, i.e. the unconditioned model (no prior). Returns their images, sampling times and the calibration."""

    def measured(images):
        embeddings = image_embeddings(clip_vision, images) if clip_vision is not None else None
        return token_scoring.similarity(images, embeddings)[0]

    references, spent = {}, {}
    for i, (name, prompt) in enumerate([("class", tokens.fill_template(prompt_template, class_word)), ("empty", "")]):
        interrupt_check()
        references[name], spent[name] = samples.images_for(prompt)
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
    return references, spent, calibration


NODES = [RareTokenPicker]
