"""Rows of shards → one training batch, the way HF ``transformers`` models name their inputs.

The schema stores only what cannot be derived; everything else is made here per batch, with
numpy over the whole batch at once: padding to the longest row (rounded up to a multiple of
8, for tensor cores), attention masks, token type ids from ``segment_b_start``, labels, and
dynamic masking through ``mlm_data.masking.mask_tokens``. A row's mask is keyed by
``(seed, "mask", epoch, global row id)``, so it does not depend on the batch, the worker or
the padding it lands with.

Rows that only pad out the last batch of an epoch (``sample_mask`` False) carry ``-100``
labels everywhere, so every loss ignores them without special code; they are cut to the
batch's longest real row, so they never make a batch wider. A worker collates several of its
batches in one pass (``Collator.__call__``), with results identical to one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlm_data.config.preprocess import MaskingConfig
from mlm_data.dataset.schema import IGNORE_INDEX, MLM_TASKS
from mlm_data.masking import mask_tokens
from mlm_data.seeding import derive_key, random_bits
from mlm_data.text.tokenizer import SpecialTokens, TokenizerInfo, vocab_tokens_for_random
from trainer.loading.shard_reader import ShardRows


@dataclass(frozen=True)
class Part:
    """The rows of one batch that come from one shard."""

    shard: ShardRows
    batch_index: np.ndarray  # (n,) rows of the batch
    rows: np.ndarray         # (n,) rows of the shard, same order


def columns_for(task: str, *, static_masking: bool, masking: MaskingConfig | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(list columns, scalar columns)`` a batch of ``task`` reads; nothing else is indexed."""
    lists, scalars = ["input_ids"], []
    if task in MLM_TASKS:
        if static_masking:
            lists += ["masked_positions", "masked_labels"]
        elif masking is not None and (masking.whole_word or masking.span):
            lists.append("word_start")
    if task == "mlm_nsp":
        scalars += ["segment_b_start", "next_sentence_label"]
    elif task == "causal_lm":
        lists.append("document_starts")
    elif task == "token_classification":
        lists += ["labels", "word_start"]
        scalars += ["example_id", "window_index"]
    elif task == "sequence_classification":
        scalars += ["segment_b_start", "label"]
    return tuple(lists), tuple(scalars)


class Collator:
    """Turns ``Part``s into a dict of numpy arrays (``torch.from_numpy`` makes them tensors)."""

    def __init__(self, *, task: str, special_tokens: Mapping[str, int | None], vocab_size: int,
                 max_seq_length: int, static_masking: bool, masking: MaskingConfig | None, seed: int,
                 pad_to_multiple_of: int = 8, pad_to_max_length: bool = False, tokenizer_sha256: str = "") -> None:
        self.task, self.seed, self.static_masking = task, seed, static_masking
        self.masking = masking if task in MLM_TASKS and not static_masking else None
        self.multiple = max(1, int(pad_to_multiple_of or 1))
        self.max_width = -(-max_seq_length // self.multiple) * self.multiple
        self.pad_to_max_length = pad_to_max_length
        pad = special_tokens.get("pad")
        self.pad_id = int(pad if pad is not None else special_tokens.get("eos") or 0)
        specials = np.array(sorted({int(v) for v in special_tokens.values() if v is not None}), dtype=np.int64)
        self.is_special = np.zeros(max(vocab_size, int(specials.max(initial=-1)) + 1), dtype=bool)
        self.is_special[specials] = True
        self.not_special = ~self.is_special
        self._epoch_keys: dict[int, int] = {}
        if self.masking is not None:
            if special_tokens.get("mask") is None:
                raise ValueError(f"task {task!r} with dynamic masking needs a mask token in the vocabulary")
            self.mask_id = int(special_tokens["mask"])  # type: ignore[arg-type]
            known = {k: special_tokens.get(k) for k in ("cls", "sep", "mask", "pad", "unk", "eos")}
            info = TokenizerInfo(vocab_size=vocab_size, special=SpecialTokens(**known), sha256=tokenizer_sha256)
            self.random_ids = vocab_tokens_for_random(info)

    def __call__(self, parts: Sequence[Part], *, row_ids: np.ndarray, mask_epochs: np.ndarray,
                 sample_mask: np.ndarray, batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
        """Collate ``len(row_ids) / batch_size`` consecutive batches in one vectorised pass.

        Every array op and every ``mask_tokens`` call then covers all of them at once, which
        pays numpy's per-call cost once per pass instead of once per batch; each batch still
        gets its own width, and since a row's mask ignores its neighbours and the padding,
        the batches are identical to ones collated alone.
        """
        n = len(row_ids)
        size = batch_size or n
        lengths = np.zeros(n, dtype=np.int64)
        for p in parts:
            lengths[p.batch_index] = p.shard.lengths[p.rows]
        lengths, widths = self._lengths_and_widths(lengths.reshape(-1, size), sample_mask.reshape(-1, size))
        width = int(widths.max())
        valid = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
        # Where the fill goes; None when every row is full (packed datasets), which skips it.
        padding = None if lengths.min(initial=width) >= width else ~valid
        ids = _gather(parts, "input_ids", valid, padding, np.int64, self.pad_id)  # (B, T)
        batch = {"input_ids": ids, "attention_mask": valid.astype(np.int64)}
        padding_rows = ~sample_mask

        if self.task in MLM_TASKS:
            batch["input_ids"], batch["labels"] = self._mlm_labels(parts, ids, valid, padding, row_ids, mask_epochs)
        elif self.task == "causal_lm":
            batch["labels"] = np.where(valid, ids, IGNORE_INDEX)
            batch["document_ids"] = _document_ids(parts, valid)
        elif self.task == "token_classification":
            batch["labels"] = _gather(parts, "labels", valid, padding, np.int64, IGNORE_INDEX)
            # What an evaluator needs to score whole sentences and words (trainer.evaluation.classifier);
            # example ids are uint64 hashes, carried bit for bit in int64.
            batch["word_start"] = _gather(parts, "word_start", valid, padding, bool, False)
            batch["example_id"] = _scalar(parts, "example_id", n)
            batch["window_index"] = _scalar(parts, "window_index", n)
        elif self.task == "sequence_classification":
            batch["labels"] = _scalar(parts, "label", n)
        if self.task in ("mlm_nsp", "sequence_classification"):
            seg_b = _scalar(parts, "segment_b_start", n)
            seg_b = np.where(seg_b < 0, width, seg_b)  # no segment B: all type 0
            batch["token_type_ids"] = ((np.arange(width)[None, :] >= seg_b[:, None]) & valid).astype(np.int64)
        if self.task == "mlm_nsp":
            batch["next_sentence_label"] = _scalar(parts, "next_sentence_label", n)
            batch["next_sentence_label"][padding_rows] = IGNORE_INDEX
        if "labels" in batch:
            batch["labels"][padding_rows] = IGNORE_INDEX
        batch["sample_mask"] = sample_mask.astype(bool)
        batch["row_id"] = row_ids.astype(np.int64)
        if n == size:
            return [batch]
        return [{k: np.ascontiguousarray(v[j * size:(j + 1) * size, :w] if v.ndim == 2 else v[j * size:(j + 1) * size])
                 for k, v in batch.items()} for j, w in enumerate(widths.tolist())]

    def _mask_keys(self, epoch: int, row_ids: np.ndarray) -> np.ndarray:
        """``keys_for(seed, "mask", epoch, index=row_ids)``, hashing the epoch's prefix once."""
        base = self._epoch_keys.get(epoch)
        if base is None:
            if len(self._epoch_keys) > 64:
                self._epoch_keys.clear()
            base = self._epoch_keys[epoch] = derive_key(self.seed, "mask", epoch)
        return random_bits(base, row_ids.astype(np.uint64, copy=False))

    def _lengths_and_widths(self, lengths: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row lengths (padding rows cut to their batch's longest real row: they only keep every
        rank stepping and must never widen a batch) and each batch's padded width."""
        longest_real = np.where(real, lengths, 0).max(axis=1, keepdims=True)
        cut = ~real & real.any(axis=1, keepdims=True)
        lengths = np.where(cut, np.minimum(lengths, longest_real), lengths)
        if self.pad_to_max_length:
            widths = np.full(len(lengths), self.max_width)
        else:
            rounded = -(-lengths.max(axis=1, initial=0) // self.multiple) * self.multiple
            widths = np.clip(rounded, self.multiple, self.max_width)
        return lengths.reshape(-1), widths

    def _mlm_labels(self, parts: Sequence[Part], ids: np.ndarray, valid: np.ndarray, padding: np.ndarray | None,
                    row_ids: np.ndarray, mask_epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.static_masking:
            labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
            rows, positions = _flat(parts, "masked_positions")
            _, originals = _flat(parts, "masked_labels")
            inside = positions < ids.shape[1]  # a cut padding row may lose some (its labels go anyway)
            labels[rows[inside], positions[inside]] = originals[inside]
            return ids, labels
        if self.masking is None:
            return ids, np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        maskable = self.not_special[ids]  # (B, T)
        maskable &= valid
        word_start = None
        if self.masking.whole_word or self.masking.span:
            word_start = _gather(parts, "word_start", valid, padding, bool, False)
        if mask_epochs.min() == mask_epochs.max():
            keys = self._mask_keys(int(mask_epochs[0]), row_ids)
        else:  # a mixture: each source is in its own epoch
            keys = np.empty(len(row_ids), dtype=np.uint64)
            for epoch in np.unique(mask_epochs).tolist():
                sel = mask_epochs == epoch
                keys[sel] = self._mask_keys(int(epoch), row_ids[sel])
        return mask_tokens(ids, maskable=maskable, word_start=word_start, keys=keys, config=self.masking,
                           mask_token_id=self.mask_id, random_token_ids=self.random_ids)


def _gather(parts: Sequence[Part], column: str, valid: np.ndarray, padding: np.ndarray | None, dtype: type,
            fill: object) -> np.ndarray:
    """A per-token column shaped like ``valid``, ``(B, T)``, ``fill`` where ``padding`` (None: nowhere)."""
    out = np.empty(valid.shape, dtype=dtype)
    for p in parts:
        p.shard.columns[column].scatter(p.rows, out, p.batch_index)
    if padding is not None:
        np.copyto(out, fill, where=padding)
    return out


def _scalar(parts: Sequence[Part], column: str, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    for p in parts:
        out[p.batch_index] = p.shard.scalars[column][p.rows]
    return out


def _flat(parts: Sequence[Part], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Every value of ``column`` in the batch, with the batch row it belongs to."""
    rows, values = [], []
    for p in parts:
        v, lengths = p.shard.columns[column].take(p.rows)
        rows.append(np.repeat(p.batch_index, lengths))
        values.append(v.astype(np.int64))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(values)


def _document_ids(parts: Sequence[Part], valid: np.ndarray) -> np.ndarray:
    """Documents numbered 0, 1, ... within each row from ``document_starts``; -1 on padding.

    A row that begins mid-document numbers that document 0, as does one that begins with a
    new document. The end-of-document token belongs to the document it ends.
    """
    n, width = valid.shape
    starts = np.zeros((n, width + 1), dtype=np.int64)
    rows, positions = _flat(parts, "document_starts")
    inside = positions < width  # a cut padding row may lose some
    starts[rows[inside], positions[inside]] = 1
    doc = np.cumsum(starts[:, :width], axis=1) - starts[:, :1]
    return np.where(valid, doc, -1)
