"""Candidate filter on the real CLIP BPE files ComfyUI ships (the tokenizers SDXL's clip_l and clip_g use)."""

import pytest
from image_alchemy.alchemy import tokens


@pytest.fixture(scope="module")
def sdxl_tokenizers(comfy_dir):
    """Both SDXL tokenizers as ComfyUI builds them (clip_g: same BPE files, padded differently)."""
    from transformers import CLIPTokenizer

    path = comfy_dir / "comfy" / "sd1_tokenizer"
    clip_l, clip_g = CLIPTokenizer.from_pretrained(path), CLIPTokenizer.from_pretrained(path)
    return {
        "clip_l": lambda w: clip_l(w, add_special_tokens=False)["input_ids"],
        "clip_g": lambda w: clip_g(w, add_special_tokens=False)["input_ids"],
    }


def test_words_that_split_into_several_tokens_are_rejected(sdxl_tokenizers):
    # "immen" is a BPE piece but not a word-final one: in a prompt it becomes "im" + "men</w>".
    accepted, rejected = tokens.filter_candidates(["immen", "iklan", "ffin", "pasqu", "rrrr"], sdxl_tokenizers)
    assert accepted == ["iklan", "ffin", "rrrr"]
    assert {r.word: r.reason for r in rejected} == {"immen": "2 tokens in clip_l", "pasqu": "2 tokens in clip_l"}


def test_paper_pool_keeps_only_single_token_words(sdxl_tokenizers):
    accepted, rejected = tokens.filter_candidates(tokens.PAPER_TOKENS, sdxl_tokenizers)
    assert len(tokens.PAPER_TOKENS) == 28 and len(accepted) + len(rejected) == 28
    for word in accepted:
        assert len(sdxl_tokenizers["clip_l"](word)) == 1 and len(sdxl_tokenizers["clip_g"](word)) == 1
    for r in rejected:
        assert len(sdxl_tokenizers["clip_l"](r.word)) > 1


def test_a_word_must_be_one_token_in_every_tokenizer():
    single = lambda w: [7]
    split_g = lambda w: [1, 2] if w == "ffin" else [7]
    accepted, rejected = tokens.filter_candidates(["ffin", "iklan"], {"clip_l": single, "clip_g": split_g})
    assert accepted == ["iklan"]
    assert rejected[0].reason == "2 tokens in clip_g"


@pytest.mark.parametrize(
    "word, reason",
    [
        ("sks", "3 letters (needs 4–5)"),
        ("abcdef", "6 letters (needs 4–5)"),
        ("ab1c", "not purely alphabetic"),
        ("ïklan", "not purely alphabetic"),
    ],
)
def test_length_and_alphabet_rules(word, reason):
    assert tokens.rejection_reason(word, {"t": lambda w: [1]}) == reason


def test_pasted_lists_are_split_lowercased_and_deduplicated():
    assert tokens.parse_candidates(" Iklan, ffin;rrrr\n\niklan  koval ") == ["iklan", "ffin", "rrrr", "koval"]
    assert tokens.parse_candidates(" \n ") == []


def test_vocabulary_scan_returns_rare_single_token_words_deterministically(sdxl_tokenizers, comfy_dir):
    from transformers import CLIPTokenizer

    vocab = CLIPTokenizer.from_pretrained(comfy_dir / "comfy" / "sd1_tokenizer").get_vocab()
    first = tokens.scan_vocabulary(vocab, sdxl_tokenizers, 12, seed=3, exclude=["iklan"])
    assert first == tokens.scan_vocabulary(vocab, sdxl_tokenizers, 12, seed=3, exclude=["iklan"])
    assert first != tokens.scan_vocabulary(vocab, sdxl_tokenizers, 12, seed=4, exclude=["iklan"])
    assert len(set(first)) == 12 and "iklan" not in first
    rare_floor = sorted(i for e, i in vocab.items() if e.endswith("</w>"))[len(vocab) // 2]
    for word in first:
        assert tokens.rejection_reason(word, sdxl_tokenizers) is None
        assert vocab[word + "</w>"] > rare_floor  # drawn from the rare end of the merge order
    assert tokens.scan_vocabulary(vocab, sdxl_tokenizers, 0, seed=3) == []


# Words the scan offered before it filtered by word frequency (dictionary words and names, with a prior).
OLD_SCAN_WORDS = ["puffs", "bakes", "sven", "haka", "anka", "chita", "illia"]


def test_vocabulary_scan_never_offers_frequent_words(sdxl_tokenizers, comfy_dir):
    from transformers import CLIPTokenizer
    from wordfreq import zipf_frequency

    vocab = CLIPTokenizer.from_pretrained(comfy_dir / "comfy" / "sd1_tokenizer").get_vocab()
    for word in OLD_SCAN_WORDS:  # all in the vocabulary as whole single-token words, all frequent somewhere
        assert word + "</w>" in vocab and tokens.rejection_reason(word, sdxl_tokenizers) is None
        assert tokens.word_frequency(word)[0] >= tokens.MAX_ZIPF
    template = "a photo of {token}"
    # The whole rare end of the vocabulary, not a sample: nothing frequent may come out, whatever the seed.
    every = tokens.scan_vocabulary(vocab, sdxl_tokenizers, 100_000, seed=0, template=template)
    assert len(every) >= 100 and not set(OLD_SCAN_WORDS) & set(every)
    for word in every:
        assert max(zipf_frequency(word, lang) for lang in tokens.ZIPF_LANGUAGES) < tokens.MAX_ZIPF, word
    # The old scan's draw, without the frequency filter, does return such words: the filter is what removes them.
    unfiltered = tokens.scan_vocabulary(vocab, sdxl_tokenizers, 100_000, seed=0, template=template, max_zipf=99.0)
    assert {"puffs", "bakes", "sven"} <= set(unfiltered) and len(unfiltered) > 2 * len(every)


def test_default_pool_is_large_and_every_word_one_token_inside_the_template(sdxl_tokenizers, comfy_dir):
    from transformers import CLIPTokenizer

    vocab = CLIPTokenizer.from_pretrained(comfy_dir / "comfy" / "sd1_tokenizer").get_vocab()
    template = "a photo of {token}"
    paper, _ = tokens.filter_candidates(tokens.PAPER_TOKENS, sdxl_tokenizers, template=template)
    scan = tokens.scan_vocabulary(
        vocab, sdxl_tokenizers, tokens.DEFAULT_SCAN, seed=0, exclude=tokens.PAPER_TOKENS, template=template
    )
    pool = paper + scan
    assert len(set(pool)) == len(pool) >= 16
    for word in pool:
        for name, tokenize in sdxl_tokenizers.items():
            (token_id,) = tokenize(word)
            prompt_ids = tokenize(tokens.fill_template(template, word))
            assert prompt_ids.count(token_id) == 1 and len(prompt_ids) == len(tokenize("a photo of")) + 1, name


def test_scan_offers_no_end_of_a_frequent_word_and_no_community_token(sdxl_tokenizers, comfy_dir):
    from transformers import CLIPTokenizer
    from wordfreq import iter_wordlist, zipf_frequency

    vocab = CLIPTokenizer.from_pretrained(comfy_dir / "comfy" / "sd1_tokenizer").get_vocab()
    template = "a photo of {token}"
    every, passed_over = tokens.scan_vocabulary_report(vocab, sdxl_tokenizers, 100_000, seed=0, template=template)
    why = {r.word: r.reason for r in passed_over}
    # Rare single-token words as far as the older filters go, each the end of a frequent word: passed over.
    for piece, whole in (("useum", "museum"), ("exico", "mexico"), ("ademy", "academy")):
        assert tokens.rejection_reason(piece, sdxl_tokenizers, template=template) is None
        assert tokens.word_frequency(piece)[0] < tokens.MAX_ZIPF
        assert why[piece].startswith(f"end of a frequent word: {whole} (Zipf "), why[piece]
    assert why["ohwx"] == "community placeholder: checkpoints carry a prior for it"
    assert not set(tokens.COMMUNITY_TOKENS) & set(every)
    # Checked against wordfreq's own zipf_frequency over its word lists, not the scan's table.
    ends = set()
    for lang in tokens.ZIPF_LANGUAGES:
        for word in iter_wordlist(lang):
            if zipf_frequency(word, lang) < tokens.MAX_ZIPF:
                break
            ends.update(word[-n:] for n in range(tokens.MIN_LETTERS, tokens.MAX_LETTERS + 1) if len(word) > n)
    assert not ends & set(every)
    # Still a pool to draw from at the defaults (measured: 136 words at the rare end of CLIP's vocabulary).
    assert len(every) >= 100
    scan = tokens.scan_vocabulary(
        vocab, sdxl_tokenizers, tokens.DEFAULT_SCAN, seed=0, exclude=tokens.PAPER_TOKENS, template=template
    )
    assert len(scan) == tokens.DEFAULT_SCAN == 16


def test_word_frequency_names_the_language():
    assert tokens.word_frequency("iklan") == (pytest.approx(5.05, abs=0.1), "id")  # the paper's pick is Indonesian
    assert tokens.word_frequency("ffin")[0] == 0.0


def test_zipf_table_serves_the_scan_and_persists_per_word_list(sdxl_tokenizers, comfy_dir, tmp_path, monkeypatch):
    from image_alchemy.alchemy import fingerprint_cache
    from transformers import CLIPTokenizer

    monkeypatch.setattr(fingerprint_cache, "_ZIPF_MEMO", {})  # as in a fresh process: earlier tests may have filled it

    vocab = CLIPTokenizer.from_pretrained(comfy_dir / "comfy" / "sd1_tokenizer").get_vocab()
    words = [w for _id, w in tokens.vocabulary_words(vocab)]
    assert "iklan" in words and "puffs" in words and len(words) > 5000
    builds = []

    def build(ws, langs):
        builds.append(len(ws))
        return tokens.zipf_table(ws, langs)

    table = fingerprint_cache.cached_zipf_table(tmp_path, words, tokens.ZIPF_LANGUAGES, build)
    assert table["iklan"] == tokens.word_frequency("iklan") and table["puffs"][0] >= tokens.MAX_ZIPF
    # The scan gives the same words from the table as from wordfreq itself.
    for seed in (0, 3):
        assert tokens.scan_vocabulary(
            vocab, sdxl_tokenizers, 12, seed, template="a photo of {token}", frequencies=table
        ) == tokens.scan_vocabulary(vocab, sdxl_tokenizers, 12, seed, template="a photo of {token}")
    (entry,) = tmp_path.glob("zipf-*.json")
    fingerprint_cache._ZIPF_MEMO.clear()  # as after a restart: served from the file, wordfreq not consulted
    assert fingerprint_cache.cached_zipf_table(tmp_path, reversed(words), tokens.ZIPF_LANGUAGES, build) == table
    assert builds == [len(words)]
    fingerprint_cache._ZIPF_MEMO.clear()
    entry.write_text('{"iklan": [5.0')  # a truncated file is rebuilt, never trusted
    assert fingerprint_cache.cached_zipf_table(tmp_path, words, tokens.ZIPF_LANGUAGES, build) == table
    assert builds == [len(words)] * 2
    # Another word list (another tokenizer) or language list is another entry.
    fingerprint_cache.cached_zipf_table(tmp_path, words[:10], tokens.ZIPF_LANGUAGES, build)
    fingerprint_cache.cached_zipf_table(tmp_path, words[:10], ("en",), build)
    assert len(list(tmp_path.glob("zipf-*.json"))) == 3 and not list(tmp_path.glob(".tmp-*"))


def test_a_word_that_merges_with_the_template_is_rejected(sdxl_tokenizers):
    accepted, rejected = tokens.filter_candidates(["iklan", "ffin"], sdxl_tokenizers, template="a photo of {token}s")
    assert accepted == []
    assert {r.reason for r in rejected} == {"merges with the prompt template in clip_l"}
    accepted, _ = tokens.filter_candidates(["iklan", "ffin"], sdxl_tokenizers, template="{token}, a photo")
    assert accepted == ["iklan", "ffin"]


def test_template_needs_the_token_placeholder():
    assert tokens.fill_template("a photo of {token}, studio", "iklan") == "a photo of iklan, studio"
    with pytest.raises(ValueError, match=r"\{token\}"):
        tokens.fill_template("a photo of sks", "iklan")
