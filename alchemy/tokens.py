"""Placeholder-token candidates: words that stay ONE token in all tokenizers (paper 001 §3.1, A.2; docs/DESIGN.md §4.1).

A placeholder only works as a blank slate if the text encoder sees it as a single unit. CLIP's BPE vocabulary
holds many pieces that are single tokens only inside a word (no ``</w>`` ending): written as a word in a
prompt they split ("immen" → "im" + "men"), so each candidate is checked by tokenizing it, never by looking
it up in the vocabulary.

Being one token is not enough: CLIP's vocabulary also holds dictionary words and names ("puffs", "bakes",
"sven") that carry exactly the prior a placeholder must not have. The vocabulary scan therefore also drops
every word that is frequent in any of several languages, measured with ``wordfreq`` (its frequency tables ship
inside the wheel; nothing is downloaded); every word-final piece of a frequent word ("useum" of museum, "exico" of
Mexico, "ademy" of academy: the text encoder has seen them, as the end of those words, in every caption that
had them); and the placeholders the community has used so widely that checkpoints carry a prior for them
(``COMMUNITY_TOKENS``).

Tokenizers are passed as plain callables ``word -> token ids`` (no start/end tokens), so this module imports
neither ComfyUI nor transformers.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

Tokenize = Callable[[str], Sequence[int]]

# Paper 001, appendix A.2: the authors' tokens with "little to no prior" in SDXL ("sks" yields firearms).
PAPER_TOKENS = (
    "immen",
    "pasqu",
    "iklan",
    "rapi",
    "bhar",
    "ellu",
    "ffin",
    "icop",
    "aben",
    "mmor",
    "psal",
    "phyl",
    "rrrr",
    "wozni",
    "geaux",
    "koval",
    "ayles",
    "mccre",
    "fortn",
    "prote",
    "pascu",
    "lisam",
    "percu",
    "alfar",
    "insom",
    "offro",
    "syour",
    "redon",
)

MIN_LETTERS, MAX_LETTERS = 4, 5

# Placeholder tokens in wide community use, so trained into many shared checkpoints and LoRAs (and "sks" already
# into SDXL itself, which draws rifles for it: paper 001 A.2): "sks" from the DreamBooth paper and diffusers'
# DreamBooth examples, "ohwx" from the kohya_ss / DreamBooth training guides ("ohwx man"), "tok" from Replicate's
# SDXL fine-tuning ("a photo of TOK"). The scan never offers them; typed as candidates they are scored as given.
COMMUNITY_TOKENS = ("sks", "ohwx", "tok")
# Why the scan passed a word over (the start of each reason).
FREQUENT, WORD_END_PIECE = "frequent word", "end of a frequent word"
COMMUNITY, NOT_ONE_TOKEN = "community placeholder", "not a single token"

# Languages whose words a scanned candidate must not be. SDXL learnt from LAION captions: mostly English, then
# the large European languages; Indonesian/Malay are listed because shop captions from there are common in LAION
# (the paper's own "iklan" is Indonesian for "advertisement", Zipf 5.05), Polish, Swedish and Turkish because
# scanned fragments hit their names and words ("haka", "anka").
ZIPF_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "id", "ms", "pl", "sv", "tr")
# Zipf = log10(occurrences per billion words). 1.5 ≈ once in 30 million words: below it wordfreq lists only
# typos, fragments and rare names; "puffs" (3.08 en), "bakes" (2.73 en), "sven" (4.31 sv), "chita" (3.00 pt)
# are all far above, so a scanned word must stay below MAX_ZIPF in every language of ZIPF_LANGUAGES.
MAX_ZIPF = 1.5
# Scanned candidates the node adds to the paper's pool by default: with its 3 single-token words, 19 to pick from.
DEFAULT_SCAN = 16
# CLIP's BPE marks the last piece of a word with this suffix; only such entries can be a whole word.
WORD_END = "</w>"
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class Rejected:
    word: str
    reason: str


def word_frequency(word: str, languages: Sequence[str] = ZIPF_LANGUAGES) -> tuple[float, str]:
    """The word's highest Zipf frequency over ``languages`` and the language it is reached in (0.0 = unknown)."""
    from wordfreq import zipf_frequency

    best = max(((zipf_frequency(word, lang), lang) for lang in languages), key=lambda zl: zl[0])
    return float(best[0]), best[1]


def parse_candidates(text: str) -> list[str]:
    """Splits a pasted list (spaces, commas, semicolons or newlines) into lower-case words, first occurrence
    kept. CLIP lower-cases prompts, so "Iklan" and "iklan" are the same candidate."""
    seen: dict[str, None] = {}
    for word in _SEPARATORS.split(text.strip().lower()):
        if word:
            seen.setdefault(word, None)
    return list(seen)


def rejection_reason(
    word: str,
    tokenizers: Mapping[str, Tokenize],
    min_letters: int = MIN_LETTERS,
    max_letters: int = MAX_LETTERS,
    template: str | None = None,
) -> str | None:
    """Why ``word`` cannot be a placeholder, or None when it is alphabetic, ``min_letters``–``max_letters``
    long and encodes as exactly one token in every tokenizer — and, given a prompt template, still appears
    as that token once placed in it (``{token}s`` would merge it with the next letters)."""
    if not (word.isascii() and word.isalpha()):
        return "not purely alphabetic"
    if not min_letters <= len(word) <= max_letters:
        return f"{len(word)} letters (needs {min_letters}–{max_letters})"
    for name, tokenize in tokenizers.items():
        ids = tokenize(word)
        if len(ids) != 1:
            return f"{len(ids)} tokens in {name}"
        if template is not None and ids[0] not in tokenize(fill_template(template, word)):
            return f"merges with the prompt template in {name}"
    return None


def filter_candidates(
    words: Iterable[str],
    tokenizers: Mapping[str, Tokenize],
    min_letters: int = MIN_LETTERS,
    max_letters: int = MAX_LETTERS,
    template: str | None = None,
) -> tuple[list[str], list[Rejected]]:
    """Keeps the words that pass ``rejection_reason``; returns (accepted in input order, rejected with why)."""
    if not tokenizers:
        raise ValueError("filter_candidates needs at least one tokenizer")
    accepted, rejected = [], []
    for word in words:
        reason = rejection_reason(word, tokenizers, min_letters, max_letters, template)
        if reason is None:
            accepted.append(word)
        else:
            rejected.append(Rejected(word, reason))
    return accepted, rejected


def vocabulary_words(
    vocab: Mapping[str, int], min_letters: int = MIN_LETTERS, max_letters: int = MAX_LETTERS
) -> list[tuple[int, str]]:
    """(id, word) for the vocabulary's word-final, lower-case alphabetic entries of the right length: every
    word the scan can offer, and every word that can be one token at all."""
    words = []
    for entry, token_id in vocab.items():
        if not entry.endswith(WORD_END):
            continue
        word = entry[: -len(WORD_END)]
        if word.isascii() and word.isalpha() and word.islower() and min_letters <= len(word) <= max_letters:
            words.append((token_id, word))
    return words


def word_end_table(
    words: Iterable[str], languages: Sequence[str] = ZIPF_LANGUAGES, min_zipf: float = MAX_ZIPF
) -> dict[str, tuple[str, float, str]]:
    """For each of ``words`` that ends a longer word with a Zipf frequency ≥ ``min_zipf`` in one of ``languages``:
    (that word, its Zipf frequency, the language), the most frequent such word. Words that end none are absent.
    Walks every frequent word of every language (seconds): callers keep the table
    (``fingerprint_cache.cached_word_end_table``)."""
    import math

    from wordfreq import get_frequency_dict

    wanted = set(words)
    lengths = sorted({len(w) for w in wanted})
    floor = 10.0 ** (min_zipf - 9.01)  # Zipf = log10(frequency per word) + 9, rounded to 0.01 as wordfreq does
    found: dict[str, tuple[str, float, str]] = {}
    for lang in languages:
        for word, freq in get_frequency_dict(lang).items():
            if freq < floor or (zipf := round(math.log10(freq) + 9, 2)) < min_zipf:
                continue
            for n in lengths:
                end = word[-n:]
                if len(word) > n and end in wanted and (end not in found or found[end][1] < zipf):
                    found[end] = (word, zipf, lang)
    return found


def zipf_table(words: Iterable[str], languages: Sequence[str] = ZIPF_LANGUAGES) -> dict[str, tuple[float, str]]:
    """``word_frequency`` of each word. Loading wordfreq's tables for 12 languages is the cost (seconds), not
    the lookups, so callers build this once per vocabulary and keep it (``fingerprint_cache.cached_zipf_table``)."""
    return {word: word_frequency(word, languages) for word in words}


def scan_vocabulary(*args, **kwargs) -> list[str]:
    """The words of :func:`scan_vocabulary_report`, without why the others went."""
    return scan_vocabulary_report(*args, **kwargs)[0]


def scan_vocabulary_report(
    vocab: Mapping[str, int],
    tokenizers: Mapping[str, Tokenize],
    count: int,
    seed: int,
    exclude: Iterable[str] = (),
    rarest_fraction: float = 0.25,
    min_letters: int = MIN_LETTERS,
    max_letters: int = MAX_LETTERS,
    template: str | None = None,
    max_zipf: float = MAX_ZIPF,
    languages: Sequence[str] = ZIPF_LANGUAGES,
    frequencies: Mapping[str, tuple[float, str]] | None = None,
    words: Sequence[tuple[int, str]] | None = None,
    word_ends: Mapping[str, tuple[str, float, str]] | None = None,
) -> tuple[list[str], list[Rejected]]:
    """Draws ``count`` extra candidates from a BPE vocabulary (entry → id); returns them and the words drawn
    before them that were passed over, with why.

    Eligible: word-final alphabetic entries of the right length, rarer than ``max_zipf`` in every one of
    ``languages``, not the end of a word that is not (``word_ends``: a ``word_end_table`` over the same
    languages and threshold; looked up when not given), not one of ``COMMUNITY_TOKENS``, that re-tokenize as one
    token in every tokenizer (inside ``template`` when given). BPE ids follow merge order, so high ids are the
    pieces the tokenizer saw least; the draw is from the rarest ``rarest_fraction`` of the length-eligible words,
    seeded, so the same seed gives the same scan. ``frequencies``: a ``zipf_table`` over the same
    ``languages``, so no word list has to be loaded; words missing from it are looked up. ``words``:
    ``vocabulary_words(vocab, min_letters, max_letters)`` when the caller has it already (it walks the whole
    vocabulary).
    """
    if count <= 0:
        return [], []
    if not 0.0 < rarest_fraction <= 1.0:
        raise ValueError(f"rarest_fraction must be in (0, 1], got {rarest_fraction}")
    excluded = set(exclude)
    if words is None:
        words = vocabulary_words(vocab, min_letters, max_letters)
    words = [(i, w) for i, w in words if w not in excluded]
    words.sort(reverse=True)
    pool = [word for _id, word in words[: max(count, round(len(words) * rarest_fraction))]]
    rng = random.Random(seed)
    rng.shuffle(pool)
    frequencies = frequencies or {}
    if word_ends is None:
        word_ends = _word_ends(tuple(sorted(w for _id, w in words)), tuple(languages), max_zipf)
    # Frequency and re-tokenization only for what we are about to use (≈ 0.3 ms a word for 12 languages).
    chosen, passed_over = [], []
    for word in pool:
        zipf, lang = frequencies[word] if word in frequencies else word_frequency(word, languages)
        # Reasons read "<kind>: <detail>", so a table can group them by kind (token_scoring.passed_over_rows).
        if zipf >= max_zipf:
            reason = f"{FREQUENT}: Zipf {zipf:.2f} in {lang}"
        elif word in word_ends:
            whole, whole_zipf, whole_lang = word_ends[word]
            reason = f"{WORD_END_PIECE}: {whole} (Zipf {whole_zipf:.2f} in {whole_lang})"
        elif word in COMMUNITY_TOKENS:
            reason = f"{COMMUNITY}: checkpoints carry a prior for it"
        else:
            reason = rejection_reason(word, tokenizers, min_letters, max_letters, template)
            reason = reason and f"{NOT_ONE_TOKEN}: {reason}"
        if reason is not None:
            passed_over.append(Rejected(word, reason))
            continue
        chosen.append(word)
        if len(chosen) == count:
            break
    return chosen, passed_over


@functools.lru_cache(maxsize=4)
def _word_ends(words: tuple[str, ...], languages: tuple[str, ...], min_zipf: float):
    """``word_end_table`` kept for the process: for scans called without a table (tests, scripts)."""
    return word_end_table(words, languages, min_zipf)


def fill_template(template: str, token: str) -> str:
    """The prompt for one candidate; the template must contain ``{token}`` exactly where the word goes."""
    if "{token}" not in template:
        raise ValueError(
            f"prompt template {template!r} has no {{token}} placeholder: write e.g. 'a photo of {{token}}'"
        )
    return template.replace("{token}", token)
