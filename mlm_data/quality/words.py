r"""The words of a batch of documents as stable 64-bit hashes, and their n-grams.

Near-duplicate shingles, the n-gram repetition rules and the stop-word check all look at the
same words: the text lowercased, cut into runs of letters, digits and underscores (so
punctuation is gone; exactly what ``re.findall(r"\w+", text.lower())`` finds). A word's hash is
a polynomial of its code points modulo 2**64 (Horner with an odd 64-bit base), its length
mixed in and SplitMix64's finaliser on top (``word_hash``): a pure function of the text, the
same in every process and on every machine (never Python's ``hash()``). n-gram hashes are then
combined from word hashes with vectorised integer mixing.

``batch_words`` finds the words without a Python object per word: the batch's code points as
one numpy array, word characters by a lookup table, words as runs of them, and every word's
polynomial from one prefix sum over the batch (``_word_keys``). Word extraction was once the
largest cost of near-duplicate removal; this is about twice as fast as grouping equal words and
hashing each distinct one with blake2b, which it replaced, with identical word boundaries
(tested against the regex on real and odd Unicode text, and against ``word_hash`` word by word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlm_data.seeding import mix64

_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)
_STEP = np.uint64(0x9E3779B97F4A7C15)


def word_hash(word: str) -> int:
    """The stable 64-bit hash of one (already lowercased) word; ``batch_words`` computes the
    same for every word of a batch at once.

    >>> word_hash("panic") == int(batch_words(["PANIC!"]).hashes[0])
    True
    """
    key = 0
    for ch in word:
        key = (key * _BASE_INT + ord(ch)) & _MASK
    key ^= (len(word) << 56) & _MASK
    return int(mix64(np.array([key], dtype=np.uint64))[0])


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


#: Word characters below 128 (``\w`` is ``str.isalnum()`` or ``_``).
_ASCII_WORD = np.array([chr(c).isalnum() or c == 0x5F for c in range(128)], dtype=bool)
#: Separates documents in the batch's joined text (not a word character).
_SEPARATOR = " "
_BASE_INT = 0x100000001B3                              # odd, so invertible modulo 2**64
_MASK = (1 << 64) - 1
_BASE = np.uint64(_BASE_INT)
_BASE_INVERSE = np.uint64(pow(_BASE_INT, -1, 1 << 64))


def _word_characters(cps: np.ndarray) -> np.ndarray:
    r"""(N,) bool: which code points ``\w`` matches (a table for ASCII, ``isalnum`` per distinct other)."""
    out = np.zeros(len(cps), dtype=bool)
    ascii_ = cps < 128
    out[ascii_] = _ASCII_WORD[cps[ascii_]]
    other = np.flatnonzero(~ascii_)
    if len(other):
        distinct, inverse = np.unique(cps[other], return_inverse=True)
        flags = np.fromiter((chr(c).isalnum() for c in distinct.tolist()), dtype=bool, count=len(distinct))
        out[other] = flags[inverse]
    return out


class _Powers:
    """``base**i mod 2**64`` for ``i < n``, kept between batches (a cumulative product over every
    code point of the batch cost as much as the rest of the word extraction). Up to
    ``_CACHED`` entries are kept; a longer batch gets its own array. The cached array is only
    ever replaced by a longer one, so threads reading it concurrently see a correct prefix."""

    _CACHED = 1 << 22

    def __init__(self, base: np.uint64) -> None:
        self._base = base
        self._table = self._compute(1 << 16)

    def _compute(self, n: int) -> np.ndarray:
        p = np.full(n, self._base, dtype=np.uint64)
        p[:1] = 1
        return np.cumprod(p, dtype=np.uint64)

    def first(self, n: int) -> np.ndarray:
        table = self._table
        if len(table) < n:
            if n > self._CACHED:
                return self._compute(n)
            table = self._table = self._compute(max(n, min(2 * len(table), self._CACHED)))
        return table[:n]


_POWERS, _INVERSE_POWERS = _Powers(_BASE), _Powers(_BASE_INVERSE)


def _word_keys(cps: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``word_hash`` of every word ``cps[starts[i]:ends[i]]``: the polynomial
    ``sum(c_i * B^(len-1-i)) mod 2**64`` from one prefix sum (``B^(e-1) * sum_{s<=i<e} c_i * B^-i``),
    the length in the top byte, then mixed."""
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(cps) + 1, dtype=np.uint64)
        np.cumsum(cps.astype(np.uint64) * _INVERSE_POWERS.first(len(cps)), out=prefix[1:])
        keys = (prefix[ends] - prefix[starts]) * _POWERS.first(len(cps))[ends - 1]
        return mix64(keys ^ ((ends - starts).astype(np.uint64) << np.uint64(56)))


def batch_words(texts: Sequence[str]) -> BatchWords:
    """The words of ``texts`` (each document's in order), as hashes and lengths, vectorised.

    >>> w = batch_words(["Don't PANIC", "", "panic"])
    >>> w.offsets.tolist(), w.lengths.tolist(), int(w.hashes[2]) == int(w.hashes[3]) == word_hash("panic")
    ([0, 3, 3, 4], [3, 1, 5, 5], True)
    """
    lowered = [t.lower() for t in texts]   # per document, as the regex saw them (lower() may change lengths)
    text = _SEPARATOR.join(lowered)
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    edges = np.diff(_word_characters(cps).astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    doc_ends = np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)) + 1)
    counts = np.bincount(np.searchsorted(doc_ends, starts, side="right"), minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if len(starts) == 0:
        return BatchWords(np.zeros(0, np.uint64), np.zeros(0, np.int64), offsets)
    return BatchWords(_word_keys(cps, starts, ends), (ends - starts).astype(np.int64), offsets)


def combine(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """One hash from aligned word-hash arrays, order-sensitive: ``combine([a, b]) != combine([b, a])``."""
    with np.errstate(over="ignore"):
        h = mix64(hashes[0] + _STEP)
        for w in hashes[1:]:
            h = mix64(h * _MULTIPLIER + w)
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
