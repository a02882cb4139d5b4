"""Held-out evaluation of language models: MLM loss, accuracy and perplexity, NSP accuracy,
next-token loss and accuracy for causal LMs, and the unigram baseline of both.

The baseline answers "is the model learning anything beyond token frequencies?": the accuracy
of always predicting the single most frequent token among the evaluated masked labels. A model
below it has learned less than a frequency table.

Every rank evaluates its share of the split and the sums (never the means) are added across
ranks, so the figures are exact token- and row-weighted averages over the whole evaluation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import torch

from mlm_data.dataset.schema import IGNORE_INDEX
from trainer import distributed
from trainer.models.encoder import BertForPreTraining

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label", "document_ids")


def model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The loader batch's tensors that the model takes, on ``device``."""
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS if k in batch}


@torch.no_grad()
def evaluate(model: BertForPreTraining, batches: Iterable[Mapping[str, torch.Tensor]], *,
             device: torch.device, amp_dtype: torch.dtype | None = None,
             max_batches: int | None = None) -> dict[str, float]:
    """Metrics over ``batches`` (at most ``max_batches`` per rank), summed over all ranks.

    Returns ``loss`` (mlm + nsp), ``mlm_loss``, ``perplexity`` (exp of mlm_loss),
    ``mlm_accuracy``, ``unigram_accuracy`` (the baseline), ``predictions`` (masked tokens
    scored) and, for NSP models, ``nsp_loss`` and ``nsp_accuracy``.
    """
    was_training = model.training
    model.eval()
    # mlm_loss_sum, mlm_correct, mlm_count, nsp_loss_sum, nsp_correct, nsp_count
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    label_counts = torch.zeros(model.config.vocab_size, dtype=torch.int64, device=device)
    try:
        for batch in itertools.islice(batches, max_batches):
            inputs = model_inputs(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(**inputs)
            n = out.mlm_labels.numel()
            sums[0] += out.mlm_loss.double() * n
            sums[1] += (out.logits.argmax(-1) == out.mlm_labels).sum()
            sums[2] += n
            label_counts += torch.bincount(out.mlm_labels, minlength=label_counts.numel())
            if out.nsp_loss is not None:
                nsp_labels = inputs["next_sentence_label"]
                valid = nsp_labels != IGNORE_INDEX  # (B,)
                rows = valid.sum()
                sums[3] += out.nsp_loss.double() * rows
                sums[4] += ((out.nsp_logits.argmax(-1) == nsp_labels) & valid).sum()
                sums[5] += rows
    finally:
        model.train(was_training)
    distributed.all_reduce_sum(sums)
    distributed.all_reduce_sum(label_counts)
    mlm_loss_sum, mlm_correct, mlm_count, nsp_loss_sum, nsp_correct, nsp_count = sums.tolist()
    mlm_count = max(mlm_count, 1.0)
    mlm_loss = mlm_loss_sum / mlm_count
    result = {
        "loss": mlm_loss,
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": mlm_correct / mlm_count,
        "unigram_accuracy": int(label_counts.max()) / mlm_count,
        "predictions": int(sums[2]),
    }
    if nsp_count:
        result["nsp_loss"] = nsp_loss_sum / nsp_count
        result["nsp_accuracy"] = nsp_correct / nsp_count
        result["loss"] = mlm_loss + result["nsp_loss"]
    return result


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *,
                device: torch.device, amp_dtype: torch.dtype | None = None,
                max_batches: int | None = None) -> dict[str, float]:
    """Next-token ``loss``, ``perplexity``, ``accuracy``, ``unigram_accuracy`` (always guessing
    the most frequent target) and ``predictions`` (targets scored) of a causal LM."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss_sum, correct, count
    label_counts = torch.zeros(model.config.vocab_size, dtype=torch.int64, device=device)
    try:
        for batch in itertools.islice(batches, max_batches):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(**model_inputs(batch, device))
            n = out.labels.numel()
            sums += torch.stack([out.loss.double() * n, (out.logits.argmax(-1) == out.labels).sum().double(),
                                 sums.new_tensor(n)])
            label_counts += torch.bincount(out.labels, minlength=label_counts.numel())
    finally:
        model.train(was_training)
    distributed.all_reduce_sum(sums)
    distributed.all_reduce_sum(label_counts)
    loss_sum, correct, count = sums.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "perplexity": math.exp(min(loss_sum / count, 700.0)),
            "accuracy": correct / count, "unigram_accuracy": int(label_counts.max()) / count,
            "predictions": int(sums[2])}
