"""Content fingerprints of model weights and a small on-disk cache of the images sampled for each token.

Sampling is the whole cost of a token scan; scoring the cached images again is milliseconds. So the cache
keeps the uint8 images per (model fingerprint, candidate, settings) in one safetensors file each (no pickle),
written to a temp file then renamed, so a crash never leaves a half-written entry.

The one fixed cost besides sampling is the Zipf frequency of the vocabulary's words (wordfreq loads a table per
language, seconds for 12): it is kept in memory and in one JSON file per (word list, languages, wordfreq version).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def _tensor_digest(h, tensor: torch.Tensor, samples: int) -> None:
    """Feeds shape, dtype and up to ``samples`` evenly strided values of ``tensor`` into ``h``."""
    h.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
    flat = tensor.detach().reshape(-1)
    if flat.numel() == 0:
        return
    step = max(1, flat.numel() // samples)
    picked = flat[::step][:samples]
    # float32 on the CPU: same bytes whatever device or storage dtype the weights sit in now.
    h.update(picked.to(device="cpu", dtype=torch.float32).numpy().tobytes())


def fingerprint_tensors(
    named: Iterable[tuple[str, torch.Tensor]], samples_per_tensor: int = 1024, max_sampled: int = 48
) -> str:
    """A cheap content hash of a set of named tensors.

    All names, shapes and dtypes go in (any architecture change shows); values are read from at most
    ``max_sampled`` tensors spread evenly over the sorted names, ``samples_per_tensor`` values each, so an
    SDXL UNet (2.6 G parameters) hashes in milliseconds instead of seconds. Two checkpoints fine-tuned from
    one base still differ: fine-tuning moves essentially every value.
    """
    items = sorted(named, key=lambda kv: kv[0])
    h = hashlib.sha256()
    for name, tensor in items:
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
    stride = max(1, len(items) // max_sampled)
    for name, tensor in items[::stride]:
        h.update(name.encode())
        _tensor_digest(h, tensor, samples_per_tensor)
    return h.hexdigest()


def fingerprint_value(value, samples: int = 1024) -> str:
    """A hash of a nested structure of tensors, numbers and strings (e.g. ComfyUI's LoRA patch lists).

    Objects that carry their tensors in ``.weights`` (ComfyUI's weight adapters) hash by type and weights;
    any other object (a callable patch) hashes by its qualified type name only.
    """
    h = hashlib.sha256()

    def walk(v):
        if isinstance(v, torch.Tensor):
            _tensor_digest(h, v, samples)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(f"{type(v).__name__}:{v!r};".encode())
        elif isinstance(v, (list, tuple)):
            h.update(f"[{len(v)}".encode())
            for item in v:
                walk(item)
            h.update(b"]")
        elif isinstance(v, Mapping):
            h.update(b"{")
            for k in sorted(v, key=repr):
                h.update(repr(k).encode())
                walk(v[k])
            h.update(b"}")
        else:
            h.update(f"<{type(v).__module__}.{type(v).__qualname__}>".encode())
            if hasattr(v, "weights"):
                walk(v.weights)

    walk(value)
    return h.hexdigest()


_ZIPF_MEMO: dict[str, dict[str, tuple[float, str]]] = {}


@functools.lru_cache(maxsize=1)
def _wordfreq_version() -> str:
    from importlib import metadata

    return metadata.version("wordfreq")


def cached_zipf_table(
    directory: str | os.PathLike,
    words: Iterable[str],
    languages: Sequence[str],
    build: Callable[[list[str], Sequence[str]], Mapping[str, tuple[float, str]]],
) -> dict[str, tuple[float, str]]:
    """``build(words, languages)`` (e.g. ``tokens.zipf_table``), computed once per word list, language list and
    wordfreq version: then served from memory, or after a restart from ``directory/zipf-<key>.json``.

    The key hashes the words themselves (they come from the tokenizer's vocabulary), so another tokenizer file
    or a wordfreq upgrade gives another entry, never a stale one. An unreadable or foreign file is rebuilt.
    """
    words = sorted(set(words))

    def read(stored):
        return {w: (float(stored[w][0]), str(stored[w][1])) for w in words}

    return _cached_word_table(directory, "zipf", words, languages, lambda: build(words, languages), read, {})


def cached_word_end_table(
    directory: str | os.PathLike,
    words: Iterable[str],
    languages: Sequence[str],
    min_zipf: float,
    build: Callable[[list[str], Sequence[str], float], Mapping[str, tuple[str, float, str]]],
) -> dict[str, tuple[str, float, str]]:
    """``build(words, languages, min_zipf)`` (``tokens.word_end_table``: which words end a frequent word), kept
    like :func:`cached_zipf_table` in ``directory/word_ends-<key>.json``."""
    words = sorted(set(words))
    known = set(words)

    def read(stored):
        return {w: (str(v[0]), float(v[1]), str(v[2])) for w, v in stored.items() if w in known}

    return _cached_word_table(
        directory, "word_ends", words, languages, lambda: build(words, languages, min_zipf), read, {"min": min_zipf}
    )


def _cached_word_table(directory, kind: str, words: list[str], languages, build, read, extra: dict) -> dict:
    key = cache_key(kind=kind, words=words, languages=list(languages), wordfreq=_wordfreq_version(), **extra)
    if key in _ZIPF_MEMO:
        return _ZIPF_MEMO[key]
    path = Path(directory) / f"{kind}-{key}.json"
    table = None
    if path.exists():
        try:
            table = read(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            log.warning("rebuilding unreadable word-frequency cache %s: %s", path, exc)
            table = None
    if table is None:
        table = read(json.loads(json.dumps(dict(build()))))  # the stored form, so a file read back is equal
        _write_atomic(path, json.dumps(table, sort_keys=True).encode("utf-8"))
    _ZIPF_MEMO[key] = table
    return table


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_key(**parts) -> str:
    """A file-name-safe key for one cache entry; ``parts`` must be JSON-serializable."""
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


class ImageCache:
    """uint8 image batches (N×H×W×C) keyed by ``cache_key``, one safetensors file per entry."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str) -> np.ndarray | None:
        """The stored images as float32 0..1, or None when absent or unreadable (then it is resampled)."""
        from safetensors.numpy import load_file

        path = self.path(key)
        if not path.exists():
            return None
        try:
            return load_file(str(path))["images"].astype(np.float32) / 255.0
        except Exception as exc:  # a truncated or foreign file is a miss, never a failed run
            log.warning("ignoring unreadable token-cache entry %s: %s", path, exc)
            return None

    def store(self, key: str, images: np.ndarray, metadata: Mapping[str, str] | None = None) -> Path:
        """Writes float 0..1 images as uint8 atomically (temp file in the same folder, then os.replace)."""
        from safetensors.numpy import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"images": np.ascontiguousarray(np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8))}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(data, tmp, metadata=dict(metadata or {}))
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)
