"""Ragged arrays as flat values plus offsets: the index arithmetic every stage shares.

Documents, sentences, rows and shards all store variable-length pieces this way; these
helpers build the offsets and gather ranges without a Python loop over the pieces.
"""

from __future__ import annotations

import numpy as np


def ranges_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop.

    >>> ranges_index(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    piece_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    begin = np.cumsum(lengths) - lengths
    return np.asarray(starts, dtype=np.int64)[piece_of] + (np.arange(total, dtype=np.int64) - begin[piece_of])


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def take_ranges(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``values[ranges_index(starts, lengths)]``, choosing the cheaper way to build it.

    Long ranges (whole documents) are copied slice by slice; many short ones through one
    fancy-index gather. Both give identical results.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return values[:0].copy()
    if lengths.sum() >= 256 * len(lengths):
        return np.concatenate([values[s:s + n] for s, n in zip(starts.tolist(), lengths.tolist())])
    return values[ranges_index(starts, lengths)]
