"""The words of a batch of documents as stable 64-bit hashes, and their n-grams.

Near-duplicate shingles, the n-gram repetition rules and the stop-word check all look at the
same words: the text lowercased, cut into runs of letters, digits and underscores (so
punctuation is gone). Each distinct word is hashed once per batch with blake2b (never
Python's ``hash()``, which changes between processes); n-gram hashes are then combined from
word hashes with vectorised integer mixing, so no per-word Python work is done beyond the
regex and one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_STEP = np.uint64(0x9E3779B97F4A7C15)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection of uint64) over an array; returns a new array."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64)
        z = (z ^ (z >> _S30)) * _C1
        z = (z ^ (z >> _S27)) * _C2
        return z ^ (z >> _S31)


def word_hash(word: str) -> int:
    """The stable 64-bit hash of one (already lowercased) word."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def words_of(text: str) -> list[str]:
    """The words of one text, lowercased, punctuation gone.

    >>> words_of("Don't PANIC: it's 4.2-ish!")
    ['don', 't', 'panic', 'it', 's', '4', '2', 'ish']
    """
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class BatchWords:
    """The words of ``D`` documents, concatenated: document ``d`` owns ``[offsets[d], offsets[d+1])``."""

    hashes: np.ndarray   # (W,) uint64
    lengths: np.ndarray  # (W,) int64, characters per word
    offsets: np.ndarray  # (D+1,) int64

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def batch_words(texts: Sequence[str]) -> BatchWords:
    vocab: dict[str, int] = {}
    index: list[int] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        counts[i] = len(words)
        index += [vocab.setdefault(w, len(vocab)) for w in words]
    digests = b"".join(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest() for w in vocab)
    unique_hashes = np.frombuffer(digests, dtype="<u8").astype(np.uint64)
    unique_lengths = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
    idx = np.asarray(index, dtype=np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return BatchWords(unique_hashes[idx], unique_lengths[idx], offsets)


def combine(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """One hash from aligned word-hash arrays, order-sensitive: ``combine([a, b]) != combine([b, a])``."""
    with np.errstate(over="ignore"):
        h = mix64(hashes[0] + _STEP)
        for w in hashes[1:]:
            h = mix64(h * _C1 + w)
        return h


@dataclass(frozen=True)
class NGrams:
    """The word n-grams of ``D`` documents: document ``d`` owns ``[offsets[d], offsets[d+1])``."""

    hashes: np.ndarray   # (G,) uint64
    starts: np.ndarray   # (G,) int64, index of the n-gram's first word in ``BatchWords``
    offsets: np.ndarray  # (D+1,) int64


def ngrams(words: BatchWords, n: int, *, whole_short_documents: bool) -> NGrams:
    """Every word n-gram of every document, hashed.

    N-grams never cross documents. A document with fewer than ``n`` (but some) words has no
    n-grams, or with ``whole_short_documents`` one: all its words (so a short document still
    gets a shingle set for near-duplicate detection).

    >>> g = ngrams(batch_words(["a b c", "a b", ""]), 3, whole_short_documents=True)
    >>> g.offsets.tolist(), g.starts.tolist()
    ([0, 1, 2, 2], [0, 3])
    """
    counts = words.counts
    per_doc = np.maximum(counts - n + 1, 0)
    short = np.flatnonzero((counts > 0) & (counts < n)) if whole_short_documents else np.zeros(0, np.int64)
    per_doc[short] = 1
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    starts = np.repeat(words.offsets[:-1], per_doc) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], per_doc))
    usable = max(len(words.hashes) - n + 1, 0)
    grams = combine([words.hashes[j:j + usable] for j in range(n)]) if usable else np.zeros(0, np.uint64)
    hashes = np.zeros(len(starts), dtype=np.uint64)
    full = np.ones(len(starts), dtype=bool)
    full[offsets[short]] = False
    hashes[full] = grams[starts[full]]
    for d in short:  # rare: one combined hash of all the words of a short document
        w = words.hashes[words.offsets[d]:words.offsets[d + 1]]
        hashes[offsets[d]] = combine([w[j:j + 1] for j in range(len(w))])[0]
    return NGrams(hashes, starts, offsets)
