"""Fine-tuning scores over numpy arrays: entity-level P/R/F1 with seqeval's semantics, token
accuracy, and accuracy / macro-F1 for sequence labels. No torch here, so the rules can be
tested on hand-written tag sequences alone.

Entities follow ``seqeval``'s default (non-strict) chunking, which reads BIO/IOB2, IOB1 and
IOBES alike. A tag is split into a prefix (its first character) and a type (what follows the
first ``-``; ``O`` has type ``_``). Scanning left to right with the previous tag, a chunk

* ends before this tag when the previous one was ``E`` or ``S``; when it was ``B``/``I`` and
  this one is ``B``, ``S`` or ``O``; or when the previous was inside a chunk of another type;
* starts at this tag when it is ``B`` or ``S``; when it is ``I``/``E`` after ``O``, ``E`` or
  ``S``; or when its type differs from the previous tag's.

So ``I-PER`` after ``O`` starts an entity (IOB1), ``I-LOC`` after ``B-PER`` starts a new one,
and ``E-``/``S-`` close theirs. Sentences never share an entity. Precision, recall and F1 are
micro-averaged over exact ``(type, start, end)`` matches; a ratio with nothing to count is 0.

>>> labels = ["O", "B-PER", "I-PER", "B-LOC"]
>>> gold = np.array([1, 2, 0, 3]); pred = np.array([1, 0, 0, 3])  # PER cut short, LOC right
>>> s = entity_scores(gold, pred, np.array([0, 4]), labels)
>>> (s["entity_precision"], s["entity_recall"], s["entity_f1"], s["token_accuracy"])
(0.5, 0.5, 0.5, 0.75)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_O, _B, _I, _E, _S, _DOT = (ord(c) for c in "OBIES.")


@dataclass(frozen=True)
class TagTable:
    """Every label of a vocabulary split once into seqeval's prefix and type."""

    prefix: np.ndarray  # (L,) uint32: code point of the label's first character
    type_id: np.ndarray  # (L,) int64: index into ``types``
    types: tuple[str, ...]

    @classmethod
    def of(cls, labels: Sequence[str]) -> TagTable:
        """``["O", "B-geo-loc"]`` → prefixes ``O, B``, types ``_, geo-loc`` (seqeval's split)."""
        types: dict[str, int] = {"_": 0}
        prefix, type_id = [], []
        for label in labels:
            prefix.append(ord(label[0]) if label else _O)
            name = label[1:].split("-", maxsplit=1)[-1] or "_"
            type_id.append(types.setdefault(name, len(types)))
        return cls(np.array(prefix, dtype=np.uint32), np.array(type_id, dtype=np.int64), tuple(types))


def chunks(tags: np.ndarray, offsets: np.ndarray, table: TagTable) -> np.ndarray:
    """``(K, 3)`` entities ``[type_id, start, end]`` (end inclusive) of the sentences
    ``tags[offsets[i]:offsets[i+1]]``, with positions counted in the flat ``tags``.

    Vectorised: every rule above is one comparison of the tag with its predecessor; a chunk
    that ends at ``i - 1`` began at the last start at or before ``i - 1``.
    """
    n_sent = len(offsets) - 1
    # An "O" after every sentence closes its last chunk and is the next sentence's predecessor.
    cut = np.asarray(offsets[1:], dtype=np.int64)
    tag = np.insert(table.prefix[tags], cut, _O)
    typ = np.insert(table.type_id[tags], cut, 0)
    position = np.insert(np.arange(len(tags), dtype=np.int64), cut, -1)  # flat position; -1 = separator
    prev_tag = np.concatenate([[_O], tag[:-1]])
    prev_typ = np.concatenate([[-1], typ[:-1]])  # seqeval's first predecessor has an empty type
    inside_before = (prev_tag != _O) & (prev_tag != _DOT)
    ends = ((prev_tag == _E) | (prev_tag == _S)
            | (((prev_tag == _B) | (prev_tag == _I)) & ((tag == _B) | (tag == _S) | (tag == _O)))
            | (inside_before & (prev_typ != typ)))
    starts = ((tag == _B) | (tag == _S)
              | (((prev_tag == _E) | (prev_tag == _S) | (prev_tag == _O)) & ((tag == _E) | (tag == _I)))
              | ((tag != _O) & (tag != _DOT) & (prev_typ != typ)))
    end_at = np.flatnonzero(ends) - 1  # (K,) last index of each chunk in the extended sequence
    # seqeval's begin offset is 0 until a chunk starts (only malformed tags end one before that).
    start_at = np.concatenate([[0], np.flatnonzero(starts)])
    begin = start_at[np.searchsorted(start_at, end_at, side="right") - 1]
    assert n_sent == 0 or (position[end_at] >= 0).all(), "a chunk cannot end on a separator"
    return np.stack([prev_typ[end_at + 1], position[begin], position[end_at]], axis=1).reshape(-1, 3)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def _prf(tp: np.ndarray | int, n_pred: np.ndarray | int, n_gold: np.ndarray | int) -> tuple[Any, Any, Any]:
    p = np.divide(tp, n_pred, out=np.zeros_like(tp, dtype=float), where=np.asarray(n_pred) > 0)
    r = np.divide(tp, n_gold, out=np.zeros_like(tp, dtype=float), where=np.asarray(n_gold) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return p, r, f


def entity_scores(gold: np.ndarray, pred: np.ndarray, offsets: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Entity P/R/F1 (micro), per-type figures and token accuracy of word-level label ids.

    ``gold`` and ``pred`` are ``(N,)`` label ids, one per word, sentence after sentence;
    ``offsets`` ``(S+1,)`` says where each sentence starts.
    """
    table = TagTable.of(labels)
    g, p = chunks(gold, offsets, table), chunks(pred, offsets, table)
    width = np.int64(len(gold) + 1)

    def keys(c: np.ndarray) -> np.ndarray:
        return (c[:, 1] * width + c[:, 2]) * len(table.types) + c[:, 0]

    hit = np.isin(keys(p), keys(g))
    n_types = len(table.types)
    tp_t = np.bincount(p[hit, 0], minlength=n_types)
    pred_t, gold_t = np.bincount(p[:, 0], minlength=n_types), np.bincount(g[:, 0], minlength=n_types)
    precision, recall, f1 = _prf(int(hit.sum()), len(p), len(g))
    p_t, r_t, f_t = _prf(tp_t, pred_t, gold_t)
    per_type = {table.types[t]: {"precision": float(p_t[t]), "recall": float(r_t[t]), "f1": float(f_t[t]),
                                 "support": int(gold_t[t])}
                for t in range(n_types) if gold_t[t] or pred_t[t]}
    return {
        "entity_precision": float(precision), "entity_recall": float(recall), "entity_f1": float(f1),
        "token_accuracy": _ratio(int((gold == pred).sum()), len(gold)),
        "entities": int(len(g)), "predicted_entities": int(len(p)),
        "per_type": per_type,
    }


def label_scores(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 of sequence labels, with per-label figures.

    Macro-F1 averages the F1 of every label that occurs in ``gold`` or ``pred`` (scikit-learn's
    ``f1_score(average="macro")``): a label absent from both says nothing about the model.

    >>> s = label_scores(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    >>> s["accuracy"], round(s["macro_f1"], 4)  # F1: a 2/3 (P 1, R 1/2), b 1/2 (P 1/3, R 1), c 0
    (0.5, 0.3889)
    """
    n = len(labels)
    tp = np.bincount(gold[gold == pred], minlength=n)
    n_pred, n_gold = np.bincount(pred, minlength=n), np.bincount(gold, minlength=n)
    p, r, f = _prf(tp, n_pred, n_gold)
    present = (n_pred + n_gold) > 0
    return {
        "accuracy": _ratio(int(tp.sum()), len(gold)),
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "per_label": {labels[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                  "support": int(n_gold[i])} for i in np.flatnonzero(present).tolist()},
    }


def majority(gold: np.ndarray, num_labels: int) -> int:
    """The most frequent label id of ``gold`` (the smallest id on a tie; 0 when empty)."""
    return int(np.bincount(gold, minlength=num_labels).argmax()) if len(gold) else 0
