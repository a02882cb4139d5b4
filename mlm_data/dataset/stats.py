"""Dataset statistics that merge by addition, so every worker can compute its share.

Histograms use fixed edges chosen from the config (never from the data), which makes partial
histograms from different buckets add up exactly and keeps the manifest deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: Tokens-per-document bins: [1, 2), [2, 4), ... [2**23, inf)
DOC_TOKEN_EDGES = [0] + [1 << i for i in range(24)]


def length_edges(max_seq_length: int, bins: int = 16) -> list[int]:
    """Bin edges from 0 to ``max_seq_length`` inclusive of the top value.

    >>> length_edges(128, 4)
    [0, 32, 64, 96, 129]
    """
    step = max(1, -(-max_seq_length // bins))
    edges = list(range(0, max_seq_length, step))
    return edges + [max_seq_length + 1]


def integer_edges(max_value: int) -> list[int]:
    """One bin per integer from 0 to ``max_value``, so quantiles of integer lengths are exact.

    >>> integer_edges(3)
    [0, 1, 2, 3, 4]
    """
    return list(range(max_value + 2))


def histogram(values: np.ndarray, edges: list[int]) -> dict[str, Any]:
    """Counts of ``values`` in ``[edges[i], edges[i+1])``; values past the last edge go last."""
    idx = np.searchsorted(np.asarray(edges[1:]), np.asarray(values), side="right")
    idx = np.minimum(idx, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    return {"edges": list(edges), "counts": counts.astype(int).tolist()}


def merge(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add statistics dicts: numbers add, histograms add bin-wise, nested dicts recurse."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = _copy(value)
            else:
                out[key] = _add(out[key], value, key)
    return out


def _copy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return list(v)
    return v


def _add(a: Any, b: Any, key: str) -> Any:
    if isinstance(a, Mapping) and "edges" in a and "counts" in a:
        if list(a["edges"]) != list(b["edges"]):
            raise ValueError(f"statistics {key!r}: histograms with different edges cannot be merged")
        return {"edges": list(a["edges"]), "counts": [x + y for x, y in zip(a["counts"], b["counts"])]}
    if isinstance(a, Mapping):
        merged = dict(a)
        for k, v in b.items():
            merged[k] = _add(merged[k], v, k) if k in merged else _copy(v)
        return merged
    return a + b


def histogram_quantile(hist: Mapping[str, Any], q: float) -> float:
    """The ``q`` quantile of the values a histogram counts.

    Exact where every bin holds one integer (``integer_edges``): the smallest value with at
    least ``q`` of the counts at or below it. Otherwise approximate, linear inside the bin.

    >>> histogram_quantile(histogram(np.array([3, 4, 4, 4]), integer_edges(4)), 0.5)
    4.0
    """
    counts = np.asarray(hist["counts"], dtype=np.float64)
    edges = np.asarray(hist["edges"], dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, q * total))
    i = min(i, len(counts) - 1)
    if np.all(np.diff(edges) == 1):
        return float(edges[i])
    before = cum[i - 1] if i else 0.0
    frac = (q * total - before) / counts[i] if counts[i] else 0.0
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))
