"""MinHash signatures by one-permutation hashing, and LSH band keys, vectorised over a batch.

A document's shingles are its word n-grams (``words.ngrams``), each a stable 64-bit hash.
Classic MinHash hashes every shingle with ``num_perm`` functions and keeps each function's
minimum: ``num_perm`` multiplications per shingle, which made signing the largest cost of
near-duplicate removal. Here every shingle is hashed once (one-permutation hashing, Li, Owen
and Zhang 2012): the keyed hash ``random_bits(key, shingle)`` puts the shingle in one of
``num_perm`` bins by its top 32 bits and competes there with its low 32 bits, and a
document's signature is the minimum of each bin. A bin no shingle fell into borrows the value
of another bin, picked by a sequence that depends only on the bin and the seed, never on the
document ("optimal densification", Shrivastava 2017), so identical shingle sets always get
identical signatures and two documents agree in a position with probability equal to the
Jaccard similarity of their shingle sets, as with ``num_perm`` independent functions (tested,
and compared with datasketch's classic MinHash in ``bench/near_dedup.py quality``). Keys come
from the config seed (``derive_key(seed, "minhash")``), so signatures are identical on every
machine and run.

LSH cuts the signature into ``bands`` of ``rows`` positions; documents sharing all rows of
any band become candidates, with probability ``1 - (1 - s**rows)**bands`` for similarity
``s`` (the S-curve).
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np

from mlm_data.quality.words import combine
from mlm_data.ragged import offsets_from_lengths, ranges_index
from mlm_data.seeding import derive_key, random_bits

EMPTY = np.uint32(0xFFFFFFFF)
"""The signature value of a document without shingles (no hash value is above it)."""
_LOW = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_DRAWS_PER_BIN = 8
"""Length of each bin's sequence of bins to borrow from, in multiples of ``num_perm``: a bin
missing from a sequence of ``8 * num_perm`` draws has odds of about e**-8."""
_CHUNK = 1 << 21
"""Densification works on about this many (empty bin, candidate) pairs at a time."""


def _bin(bits: np.ndarray, num_bins: int) -> np.ndarray:
    """The bin ``[0, num_bins)`` of each hash, from its top 32 bits (multiply-shift: uniform, no modulo)."""
    return ((bits >> _S32) * np.uint64(num_bins)) >> _S32


class MinHash:
    """Signatures of ``num_perm`` positions under one seed (identical on every worker)."""

    def __init__(self, seed: int, num_perm: int) -> None:
        self.num_perm = num_perm
        self._key = derive_key(seed, "minhash")
        self._sequence, self._rank = _borrow_sequences(derive_key(seed, "minhash-densify"), num_perm)
        self._sparse = math.isqrt(2 * num_perm)

    def sketches(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``(D, num_perm)`` uint32: each bin's minimum for ``D`` documents whose shingle hashes
        are ``shingles[offsets[d]:offsets[d+1]]``, ``EMPTY`` where no shingle fell (values are
        capped one below it, so ``EMPTY`` always means empty)."""
        num_docs, p = len(offsets) - 1, self.num_perm
        bits = random_bits(self._key, shingles)
        cell = np.repeat(np.arange(num_docs, dtype=np.int64) * p, np.diff(offsets)) + _bin(bits, p).astype(np.int64)
        out = np.full(num_docs * p, EMPTY, dtype=np.uint32)
        np.minimum.at(out, cell, np.minimum(bits & _LOW, _LOW - np.uint64(1)).astype(np.uint32))
        return out.reshape(num_docs, p)

    def densified(self, sketches: np.ndarray) -> np.ndarray:
        """``sketches`` with every empty bin of a document that has shingles filled: the
        signatures LSH bands are cut from (a document without shingles stays ``EMPTY``)."""
        out = sketches.copy()
        self._densify(out, sketches != EMPTY)
        return out

    def signatures(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Densified signatures of the documents (see ``sketches``)."""
        return self.densified(self.sketches(shingles, offsets))

    def _densify(self, out: np.ndarray, filled: np.ndarray) -> None:
        """Fill each empty bin ``i`` of a document that has shingles, in place, with the value of
        the first filled bin in bin ``i``'s sequence (``_borrow_sequences``). Two ways to find
        it, with identical results: documents with few filled bins (below ``sqrt(2 *
        num_perm)``) take the filled bin of lowest rank, (empty x filled) pairs of work;
        the others walk the sequences in doubling windows, about ``2 * num_perm / filled``
        draws per empty bin. Documents with every bin filled cost nothing."""
        p = self.num_perm
        num_filled = filled.sum(axis=1)
        sparse = (num_filled > 0) & (num_filled < self._sparse)
        docs = np.flatnonzero(sparse)
        if len(docs):
            work = np.cumsum((p - num_filled[docs]) * num_filled[docs])
            cuts = np.searchsorted(work, np.arange(_CHUNK, work[-1], _CHUNK), side="right")
            for chunk in np.split(docs, np.unique(cuts)):
                self._lowest_rank(out, filled, chunk)
        rows, bins = np.nonzero(~filled & ~sparse[:, None] & (num_filled > 0)[:, None])
        for start in range(0, len(rows), _CHUNK // 64):
            self._walk(out, filled, rows[start:start + _CHUNK // 64], bins[start:start + _CHUNK // 64])

    def _lowest_rank(self, out: np.ndarray, filled: np.ndarray, docs: np.ndarray) -> None:
        p = self.num_perm
        f = filled[docs]
        _, filled_bin = np.nonzero(f)                       # by document, then bin
        empty_doc, empty_bin = np.nonzero(~f)
        per_doc = f.sum(axis=1)
        pairs = per_doc[empty_doc]                          # one pair per (empty bin, filled bin) of a document
        candidate = filled_bin[ranges_index(offsets_from_lengths(per_doc)[:-1][empty_doc], pairs)]
        ranks = self._rank[np.repeat(empty_bin, pairs), candidate] * p + candidate
        best = np.minimum.reduceat(ranks, offsets_from_lengths(pairs)[:-1]) % p
        rows = docs[empty_doc]
        out[rows, empty_bin] = out[rows, best]

    def _walk(self, out: np.ndarray, filled: np.ndarray, rows: np.ndarray, bins: np.ndarray) -> None:
        start, width, draws = 0, 4, self._sequence.shape[1]
        while len(rows) and start < draws:
            candidates = self._sequence[bins, start:start + width].astype(np.int64)
            ok = filled[rows[:, None], candidates]
            hit = ok.any(axis=1)
            source = candidates[np.arange(len(rows)), ok.argmax(axis=1)]
            out[rows[hit], bins[hit]] = out[rows[hit], source[hit]]
            rows, bins = rows[~hit], bins[~hit]
            start, width = start + width, 2 * width
        if len(rows):                                       # never drawn: the smallest filled bin lends
            out[rows, bins] = out[rows, filled[rows].argmax(axis=1)]


def _borrow_sequences(key: int, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's pseudo-random sequence of bins to borrow from, ``(num_perm, draws)`` int16
    with ``draws = _DRAWS_PER_BIN * num_perm`` (``random_bits(key, bin, draw)``), and the
    ``(num_perm, num_perm)`` rank of every bin in every sequence: the first draw naming it,
    or ``draws + j`` if none does, so that the smallest filled bin lends then (as the walk's
    fallback does). They depend on the seed alone, never on a document: that is what makes
    borrowed values agree between similar documents (optimal densification)."""
    draws = _DRAWS_PER_BIN * num_perm
    bins = np.arange(num_perm, dtype=np.uint64)[:, None]
    sequence = _bin(random_bits(key, bins, np.arange(draws, dtype=np.uint64)[None, :]), num_perm).astype(np.int16)
    rank = np.tile(draws + np.arange(num_perm, dtype=np.int64), (num_perm, 1))
    np.minimum.at(rank, (np.repeat(np.arange(num_perm), draws), sequence.ravel().astype(np.int64)),
                  np.tile(np.arange(draws, dtype=np.int64), num_perm))
    return sequence, rank


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(D, bands)`` uint64 keys: equal keys in column ``j`` mean equal rows of band ``j``
    (up to 64-bit collisions); the band index is mixed in, so keys never collide across bands."""
    out = np.empty((len(sigs), bands), dtype=np.uint64)
    s = sigs.astype(np.uint64)
    for j in range(bands):
        cols = [np.full(len(sigs), j, dtype=np.uint64)] + [s[:, j * rows + k] for k in range(rows)]
        out[:, j] = combine(cols)
    return out


def estimated_jaccard(sketch: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Jaccard similarity of the document of ``sketch`` (P,) to each of ``others`` (M, P), from
    undensified sketches: bins where both hold the same minimum over bins where either holds
    one (the one-permutation estimator of Li, Owen and Zhang). Densified positions repeat
    other bins' outcomes; this counts each bin's outcome once. For documents with every bin
    filled it is the share of equal positions. Documents with only a few shingles get coarse
    estimates either way (``near_dedup.MinHasher`` compares their exact sets instead)."""
    filled = (others != EMPTY) | (sketch != EMPTY)
    match = (others == sketch) & filled
    return match.sum(axis=1) / np.maximum(filled.sum(axis=1), 1)


def _area(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


#: How much more a missed near-duplicate pair weighs than a false candidate in ``lsh_params``.
MISS_WEIGHT = 4.0


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the area under the S-curve
    below ``threshold`` (false candidates) plus ``MISS_WEIGHT`` times the area above it missed
    (false negatives); ties go to fewer bands.

    Every candidate pair is verified against the signatures before anything is dropped, so a
    false candidate costs one comparison while a missed pair leaves a near-duplicate in the
    data. With equal weights (datasketch's choice: 9 x 13 at 0.8) only about 69 % of pairs
    at 0.05 above the threshold become candidates; with these weights 93 %.

    >>> lsh_params(0.8, 128)
    (12, 10)
    >>> lsh_params(0.5, 128)
    (30, 4)
    """
    below = np.linspace(0.0, threshold, 512)
    above = np.linspace(threshold, 1.0, 512)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_candidates = _area(1 - (1 - below ** rows) ** bands, below)
            missed = _area((1 - above ** rows) ** bands, above)
            cost = false_candidates + MISS_WEIGHT * missed
            if best is None or cost < best[0] - 1e-12:
                best = (cost, bands, rows)
    assert best is not None
    return best[1], best[2]


def doc_digest(text: str) -> bytes:
    """8 bytes identifying a cleaned text exactly (tells exact from near duplicates)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()

