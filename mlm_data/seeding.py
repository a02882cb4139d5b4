"""Stable, keyed randomness.

Every random choice in the project comes from a key derived from ``(seed, purpose, ids...)``
by a cryptographic hash, never from Python's ``hash()``, global state, worker count or arrival
order. Two flavours are provided:

* ``KeyedRandom``: a sequential generator for control flow (pair creation draws a handful of
  numbers per document), built on the one stream Python promises to keep stable.
* ``uniform(key, counters)``: a counter-based generator, vectorised in numpy. Draw ``i`` of
  sample ``j`` is a pure function of ``(key, j, i)``, which is what lets dynamic masking depend
  only on ``(seed, epoch, sample)`` whatever the batch a sample lands in.
"""

from __future__ import annotations

import hashlib
import random as _random_module
import struct

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15


def derive_key(seed: int, purpose: str, *ids: int | str | bytes) -> int:
    """A 64-bit key for ``(seed, purpose, ids...)``, stable across processes and machines.

    >>> derive_key(1, "mask", 0, 7) == derive_key(1, "mask", 0, 7)
    True
    """
    h = hashlib.blake2b(digest_size=8, person=b"mlm-data-seed")
    h.update(struct.pack("<q", seed))
    for part in (purpose, *ids):
        if isinstance(part, bytes):
            tag, raw = b"b", part
        elif isinstance(part, str):
            tag, raw = b"s", part.encode("utf-8")
        else:
            tag, raw = b"i", str(int(part)).encode("ascii")
        h.update(tag + struct.pack("<I", len(raw)) + raw)
    return int.from_bytes(h.digest(), "little")


class KeyedRandom:
    """A sequential generator for control flow, keyed by ``derive_key``.

    It wraps CPython's Mersenne Twister, whose ``random()`` stream for a given integer seed is
    guaranteed not to change across Python versions; integers and coin flips are derived from
    ``random()`` here rather than with ``randrange``/``getrandbits``, which carry no such
    promise. Seeding costs a few microseconds, each draw tens of nanoseconds.
    """

    __slots__ = ("_random",)

    def __init__(self, key: int) -> None:
        self._random = _random_module.Random(key)

    def random(self) -> float:
        """Uniform float in [0, 1) with 53 bits of precision."""
        return self._random.random()

    def randint(self, low: int, high: int) -> int:
        """Uniform integer in the closed range [low, high], like ``random.randint``."""
        span = high - low + 1
        if span <= 0:
            raise ValueError(f"randint: empty range [{low}, {high}]")
        return low + int(self._random.random() * span)

    def binomial_half(self, n: int) -> int:
        """Number of heads in ``n`` fair coin flips (53 flips per uniform draw)."""
        heads = 0
        while n > 0:
            k = min(n, 53)
            bits = int(self._random.random() * (1 << 53))
            heads += (bits & ((1 << k) - 1)).bit_count()
            n -= k
        return heads


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser over a uint64 array (wrapping arithmetic), in place on ``z``
    when it is an array: one temporary instead of five per call.

    Only explicit ufunc calls here: they wrap silently, where numpy's scalar operators would
    warn about the overflow that is the point of the arithmetic (and ``np.errstate`` costs
    more than the mixing of a small array)."""
    z = np.asarray(z)
    if z.ndim == 0:  # a single key: numpy scalars have no in-place operations
        z = np.multiply(np.bitwise_xor(z, np.right_shift(z, _S30)), _C1)
        z = np.multiply(np.bitwise_xor(z, np.right_shift(z, _S27)), _C2)
        return np.bitwise_xor(z, np.right_shift(z, _S31))
    t = np.right_shift(z, _S30)
    z ^= t
    z *= _C1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _C2
    np.right_shift(z, _S31, out=t)
    z ^= t
    return z


def random_bits(key: int | np.ndarray, *counters: np.ndarray | int) -> np.ndarray:
    """64 random bits for every element of the broadcast ``counters`` under ``key``.

    ``key`` may be one key or an array of per-row keys that broadcasts against the counters.
    Each counter is folded in with its own odd multiplier and a mixing round, so
    ``(key, 1, 2)`` and ``(key, 2, 1)`` draw unrelated values.
    """
    z = mix64(np.add(np.asarray(key, dtype=np.uint64), _G))
    for i, c in enumerate(counters):
        z = fold(z, c, slot=i)
    return z


def fold(bits: np.ndarray, counter: np.ndarray | int, *, slot: int) -> np.ndarray:
    """Fold one more counter into ``random_bits`` drawn with ``slot`` counters:
    ``fold(random_bits(k, a), b, slot=1) == random_bits(k, a, b)``.

    It lets a caller draw the per-row part of a hash once and finish it only where needed
    (masking hashes ``(row key, stream)`` per row, then the position only at chosen tokens).

    >>> bool(fold(random_bits(7, 3), 5, slot=1) == random_bits(7, 3, 5))
    True
    """
    step = np.add(np.multiply(np.asarray(counter).astype(np.uint64, copy=False), _M[slot]), _G)
    return mix64(np.add(np.asarray(bits, dtype=np.uint64), step))  # broadcasts once; the rest is in place


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_C1, _C2, _G = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(_GOLDEN)
_MULTIPLIERS = (0xD1B54A32D192ED03, 0xABC98388FB8FAC03, 0x8CB92BA72F3D8DD7, 0xDB4F0B9175AE2165)
_M = tuple(np.uint64(m) for m in _MULTIPLIERS)


def uniform(key: int | np.ndarray, *counters: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1), one per element of the broadcast counters (see ``random_bits``)."""
    return to_unit(random_bits(key, *counters))


def to_unit(bits: np.ndarray) -> np.ndarray:
    """Random bits as uniform floats in [0, 1): their top 53 bits, scaled."""
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def keys_for(seed: int, purpose: str, *prefix: int | str, index: np.ndarray) -> np.ndarray:
    """Per-row keys for ``(seed, purpose, *prefix, index[i])``, vectorised over ``index``.

    One blake2b call for the prefix, then a mixing round per row: cheap enough to key every
    sample of every batch individually.
    """
    base = derive_key(seed, purpose, *prefix)
    return random_bits(base, np.asarray(index, dtype=np.uint64))
