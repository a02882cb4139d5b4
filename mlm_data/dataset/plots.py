"""PNG histograms of a dataset's statistics, for people who would rather look than read."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlm_data.errors import ConfigError

_TITLES = {
    "sequence_length": "Tokens per row",
    "tokens_per_document": "Tokens per document",
    "segment_a_length": "Segment A length (tokens)",
    "segment_b_length": "Segment B length (tokens)",
}


def plot_stats(stats: Mapping[str, Mapping[str, Any]], out_dir: str) -> list[str]:
    """Write one PNG per histogram and return the paths written.

    Splits are drawn as shares of their own total (a 21-row validation split next to 8,634
    training rows would be invisible as raw counts), and the x axis ends where the data does.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'mlm-data[plot]'") from None
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key, title in _TITLES.items():
        present = {split: st[key] for split, st in stats.items() if key in st and sum(st[key]["counts"])}
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for split, hist in present.items():
            counts = np.asarray(hist["counts"], dtype=np.float64)
            edges = np.asarray(hist["edges"], dtype=np.float64)
            ax.stairs(100.0 * counts / counts.sum(), edges, fill=True, alpha=0.35,
                      label=f"{split} ({int(counts.sum()):,})")
        lo, hi = data_range(present.values())
        if key == "tokens_per_document":
            ax.set_xscale("symlog", base=2)
        ax.set_xlim(lo, hi)
        ax.set_title(title)
        ax.set_ylabel("% of the split")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"{key}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def data_range(hists: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    """From the left edge of the first non-empty bin to the right edge of the last one, over
    all the histograms given.

    >>> data_range([{"edges": [0, 1, 2, 4, 8], "counts": [0, 3, 1, 0]}])
    (1.0, 4.0)
    """
    lo, hi = np.inf, -np.inf
    for hist in hists:
        counts, edges = np.asarray(hist["counts"]), np.asarray(hist["edges"], dtype=np.float64)
        used = np.flatnonzero(counts)
        if len(used):
            lo, hi = min(lo, edges[used[0]]), max(hi, edges[used[-1] + 1])
    return float(lo), float(hi)
