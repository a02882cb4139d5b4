"""``metrics.png``: loss and accuracy curves of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

from mlm_data import storage
from mlm_data.errors import ConfigError
from trainer.metrics import read_metrics

PLOT_NAME = "metrics.png"


def plot_run(run: str, out: str | None = None) -> str:
    """Draw ``run``'s curves (MLM loss per split; MLM accuracy per split against the unigram
    baseline) into ``out`` (default ``RUN/metrics.png``, any fsspec URL) and return its URL."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'mlm-data[plot]'") from None
    records = read_metrics(run)
    if not records:
        raise ConfigError(f"{run}: no {storage.join(run, 'metrics.jsonl')} records to plot")
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_split[r["split"]].append(r)

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, rows in sorted(by_split.items(), key=lambda item: item[0] != "train"):  # train first
        style = "-" if split == "train" else "o-"
        ax_loss.plot([r["step"] for r in rows], [r.get("mlm_loss", r["loss"]) for r in rows], style,
                     label=f"{split} MLM loss", markersize=4)
        acc = [(r["step"], r["mlm_accuracy"]) for r in rows if "mlm_accuracy" in r]
        if acc:
            ax_acc.plot(*zip(*acc), style, label=f"{split} MLM accuracy", markersize=4)
        base = [(r["step"], r["unigram_accuracy"]) for r in rows if "unigram_accuracy" in r]
        if base:
            ax_acc.plot(*zip(*base), "--", color="gray", label=f"{split} unigram baseline")
    ax_loss.set(title="MLM loss (cross-entropy, nats)", xlabel="step")
    ax_acc.set(title="MLM accuracy", xlabel="step", ylim=(0, None))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    url = out or storage.join(run, PLOT_NAME)
    storage.write_bytes(url, buf.getvalue())
    return url
