"""PNG histograms of a dataset's statistics, for people who would rather look than read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlm_data.errors import ConfigError

_TITLES = {
    "sequence_length": "Tokens per row",
    "tokens_per_document": "Tokens per document",
    "segment_a_length": "Segment A length (tokens)",
    "segment_b_length": "Segment B length (tokens)",
}


def plot_stats(stats: Mapping[str, Mapping[str, Any]], out_dir: str) -> list[str]:
    """Write one PNG per histogram (all splits overlaid) and return the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'mlm-data[plot]'") from None
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key, title in _TITLES.items():
        present = {split: st[key] for split, st in stats.items() if key in st}
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for split, hist in present.items():
            edges, counts = hist["edges"], hist["counts"]
            lefts, widths = edges[:-1], [max(1, b - a) for a, b in zip(edges[:-1], edges[1:])]
            ax.bar(lefts, counts, width=widths, align="edge", alpha=0.6, label=split, edgecolor="black", linewidth=0.3)
        if key == "tokens_per_document":
            ax.set_xscale("symlog", base=2)
        ax.set_title(title)
        ax.set_ylabel("count")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"{key}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
