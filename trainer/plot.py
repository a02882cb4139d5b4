"""``metrics.png``: loss and accuracy curves of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

from mlm_data import storage
from mlm_data.errors import ConfigError
from trainer.run_log import read_metrics

PLOT_NAME = "metrics.png"


def plot_run(run: str, out: str | None = None) -> str:
    """Draw ``run``'s curves (loss per split; accuracy per split against the unigram or
    majority-label baseline) into ``out`` (default ``RUN/metrics.png``, any fsspec URL) and
    return its URL."""
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

    mlm = any("mlm_loss" in r or "mlm_accuracy" in r for r in records)
    loss_key, acc_key = ("mlm_loss", "mlm_accuracy") if mlm else ("loss", _accuracy_key(records))
    name = "MLM " if mlm else ""
    accuracy = "MLM accuracy" if mlm else acc_key.replace("_", " ")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, rows in sorted(by_split.items(), key=lambda item: item[0] != "train"):  # train first
        style = "-" if split == "train" else "o-"
        ax_loss.plot([r["step"] for r in rows], [r.get(loss_key, r["loss"]) for r in rows], style,
                     label=f"{split} {name}loss", markersize=4)
        acc = [(r["step"], r[acc_key]) for r in rows if acc_key in r]
        if acc:
            ax_acc.plot(*zip(*acc), style, label=f"{split} {accuracy}", markersize=4)
        for base_key, what in (("unigram_accuracy", "unigram"), (f"baseline_{acc_key}", "majority-label")):
            base = [(r["step"], r[base_key]) for r in rows if base_key in r]
            if base:
                ax_acc.plot(*zip(*base), "--", color="gray", label=f"{split} {what} baseline")
    ax_loss.set(title=f"{name}loss (cross-entropy, nats)", xlabel="step")
    ax_acc.set(title=accuracy, xlabel="step", ylim=(0, None))
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


def _accuracy_key(records: list[dict[str, Any]]) -> str:
    return "token_accuracy" if any("token_accuracy" in r for r in records) else "accuracy"
