"""Held-out evaluation of a fine-tuned classifier, against the majority-label baseline.

Token classification is scored on whole sentences, as seqeval scores them: every row of the
split is a window of a sentence, so the predictions at scored positions are gathered with
the row's ``(example_id, window_index)``, sorted back into sentence order, and only each word's
first sub-token counts (a dataset labelled on every sub-token is still scored once per word).
The pipeline labels every word in exactly one window, so the stitched sentence is the
original one, whatever the window size and stride.

The baseline predicts the evaluation split's most frequent label everywhere: for NER that is
"O", whose entity F1 is 0 and whose token accuracy is the share of "O" words, the figure a
model must clearly beat before its token accuracy means anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from trainer import distributed
from trainer.evaluation.label_metrics import entity_scores, label_scores, majority
from trainer.evaluation.language_model import model_inputs


@torch.no_grad()
def evaluate_labels(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, task: str,
                    labels: Sequence[str], device: torch.device, amp_dtype: torch.dtype | None = None,
                    max_batches: int | None = None) -> dict[str, Any]:
    """``loss`` and the task's scores over ``batches`` (all ranks together), with ``baseline_*``
    figures and the scores of each entity type (``per_type``) or label (``per_label``)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("gold", "pred", "example", "window", "position", "word")}
    try:
        for batch in itertools.islice(batches, max_batches):
            inputs = model_inputs(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(**inputs)
            loss_sum += out.loss.double() * out.labels.numel()
            parts["gold"].append(out.labels.cpu().numpy())
            parts["pred"].append(out.logits.argmax(-1).cpu().numpy())
            if task == "token_classification":
                rows, positions = (batch["labels"] != -100).nonzero(as_tuple=True)  # row-major, as the logits
                parts["example"].append(batch["example_id"][rows].numpy())
                parts["window"].append(batch["window_index"][rows].numpy())
                parts["position"].append(positions.numpy())
                parts["word"].append(batch["word_start"][rows, positions].numpy())
    finally:
        model.train(was_training)
    gathered = distributed.all_gather_arrays(
        {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()})
    loss = float(distributed.all_reduce_sum(loss_sum)) / max(len(gathered["gold"]), 1)
    if task == "token_classification":
        return {"loss": loss, **score_tokens(gathered, labels)}
    return {"loss": loss, **score_sequences(gathered["gold"], gathered["pred"], labels)}


def score_tokens(a: Mapping[str, np.ndarray], labels: Sequence[str]) -> dict[str, Any]:
    """Scores of scored positions ``a`` (``gold``, ``pred``, ``example``, ``window``, ``position``,
    ``word``: one value each, in any order) stitched back into whole sentences of words."""
    words = a["word"].astype(bool)
    order = np.lexsort((a["position"][words], a["window"][words], a["example"][words]))
    example = a["example"][words][order]
    gold, pred = a["gold"][words][order], a["pred"][words][order]
    new_sentence = np.concatenate([[True], example[1:] != example[:-1]]) if len(example) else np.zeros(0, bool)
    offsets = np.append(np.flatnonzero(new_sentence), len(example))
    scores = entity_scores(gold, pred, offsets, labels)
    base = majority(gold, len(labels))
    baseline = entity_scores(gold, np.full_like(gold, base), offsets, labels)
    return {
        "entity_f1": scores["entity_f1"], "entity_precision": scores["entity_precision"],
        "entity_recall": scores["entity_recall"], "token_accuracy": scores["token_accuracy"],
        "baseline_label": labels[base], "baseline_entity_f1": baseline["entity_f1"],
        "baseline_token_accuracy": baseline["token_accuracy"],
        "sentences": int(new_sentence.sum()), "words": int(len(gold)), "entities": scores["entities"],
        "predicted_entities": scores["predicted_entities"], "per_type": scores["per_type"],
    }


def score_sequences(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 of one label per row, and the same of the majority label."""
    scores = label_scores(gold, pred, labels)
    base = majority(gold, len(labels))
    baseline = label_scores(gold, np.full_like(gold, base), labels)
    return {
        "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
        "baseline_label": labels[base], "baseline_accuracy": baseline["accuracy"],
        "baseline_macro_f1": baseline["macro_f1"], "rows": int(len(gold)), "per_label": scores["per_label"],
    }


def describe_labels(ev: Mapping[str, Any]) -> str:
    """One line for the log: the scores, then the baseline's."""
    head = f"eval {ev['split']} @ step {ev['step']}: "
    if "entity_f1" in ev:
        return (head + f"entity F1 {ev['entity_f1']:.4f} (precision {ev['entity_precision']:.4f}, recall "
                f"{ev['entity_recall']:.4f}), token accuracy {ev['token_accuracy']:.2%}; majority baseline "
                f"(all {ev['baseline_label']!r}): entity F1 {ev['baseline_entity_f1']:.4f}, token accuracy "
                f"{ev['baseline_token_accuracy']:.2%} [{ev['sentences']:,} sentences, {ev['words']:,} words, "
                f"{ev['entities']:,} entities]")
    return (head + f"accuracy {ev['accuracy']:.2%}, macro-F1 {ev['macro_f1']:.4f}; majority baseline "
            f"(always {ev['baseline_label']!r}): accuracy {ev['baseline_accuracy']:.2%}, macro-F1 "
            f"{ev['baseline_macro_f1']:.4f} [{ev['rows']:,} rows]")
