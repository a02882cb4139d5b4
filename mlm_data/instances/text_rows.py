"""Sequence classification rows: one text (or text pair) and one label per example.

The two stages are described in ``instances.labelled_rows``.
"""


from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from mlm_data.dataset.shards import list_array
from mlm_data.instances.labelled_rows import (
    as_table,
    flat_list,
    keep_documents,
    label_ids,
    row_tokens,
    schema_table,
    sorted_concat,
)
from mlm_data.instances.rows import (
    fixed_pieces,
    gather_index,
    take,
)
from mlm_data.reading.labelled_reader import LabelledText
from mlm_data.text.tokenizer import TextEncoder


@dataclass(frozen=True)
class TextRows:
    """Sequence classification examples, one row each, flat like ``TaggedRows``."""

    doc_ids: tuple[str, ...]     # (R,) the record id of each row
    offsets: np.ndarray          # (R+1,) int64
    ids: np.ndarray              # (N,) uint32: [CLS] A [SEP] or [CLS] A [SEP] B [SEP]
    word_start: np.ndarray       # (N,) bool
    segment_b_start: np.ndarray  # (R,) int64: index of B's first token, -1 without a pair
    truncated: np.ndarray        # (R,) bool: tokens were cut to fit
    labels: pa.Array             # (R,) string
    no_tokens: tuple[str, ...] = ()
    """Records whose text (or second text) produced no token (no rows), for the caller's
    ``no_tokens`` count; not carried by ``select``, ``to_arrow`` and ``from_arrow``."""

    @property
    def num_rows(self) -> int:
        return len(self.doc_ids)

    def select(self, rows: Sequence[int] | np.ndarray) -> TextRows:
        rows = np.asarray(rows, dtype=np.int64)
        tokens, offsets = row_tokens(self.offsets, rows)
        return TextRows(
            doc_ids=tuple(self.doc_ids[r] for r in rows.tolist()), offsets=offsets, ids=self.ids[tokens],
            word_start=self.word_start[tokens], segment_b_start=self.segment_b_start[rows],
            truncated=self.truncated[rows], labels=self.labels.take(pa.array(rows, type=pa.int64())),
        )

    def to_arrow(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.doc_ids, type=pa.string()),
                list_array(self.ids, self.offsets, pa.uint32()),
                list_array(self.word_start, self.offsets, pa.bool_()),
                pa.array(self.segment_b_start.astype(np.int32), mask=self.segment_b_start < 0),
                pa.array(self.truncated, type=pa.bool_()),
                self.labels,
            ],
            names=["doc_id", "input_ids", "word_start", "segment_b_start", "truncated", "label"],
        )

    @classmethod
    def from_arrow(cls, data: pa.Table | pa.RecordBatch) -> TextRows:
        table = as_table(data)
        offsets, ids = flat_list(table.column("input_ids"))
        b_start = table.column("segment_b_start").combine_chunks()
        return cls(
            doc_ids=tuple(table.column("doc_id").to_pylist()), offsets=offsets,
            ids=ids.to_numpy().astype(np.uint32),
            word_start=flat_list(table.column("word_start"))[1].to_numpy(zero_copy_only=False).astype(bool),
            segment_b_start=b_start.fill_null(-1).to_numpy().astype(np.int64),
            truncated=table.column("truncated").to_numpy().astype(bool),
            labels=table.column("label").combine_chunks(),
        )

    @classmethod
    def concat(cls, parts: Iterable[TextRows | pa.RecordBatch | pa.Table]) -> TextRows:
        """All rows of ``parts``, ordered by ``doc_id`` whatever order the parts arrived in."""
        return cls.from_arrow(sorted_concat(parts, ["doc_id"]))


def encode_texts(
    tok: Tokenizer | TextEncoder,
    records: Sequence[LabelledText],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
) -> TextRows:
    """Tokenize texts (and pairs) in batched calls into ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]``.

    Too long, a single text is cut to ``max_seq_length - 2`` tokens; a pair is cut as HF
    ``tokenizers`` does for ``truncation="longest_first"``: with ``L = max_seq_length - 3``,
    the shorter text (A on a tie) keeps ``min(its length, L // 2)`` tokens and the longer gets
    the rest. E.g. A of 4 and B of 6 tokens into ``L = 5``: A keeps 2, B keeps 3. Tokens are
    cut from the end. Pass a ``TextEncoder`` built once (in ``DoFn.setup``) to reuse its
    WordPiece fast path; a plain ``Tokenizer`` is wrapped in one per call.
    """
    single, pair_budget = max_seq_length - 2, max_seq_length - 3
    if pair_budget < 1:
        raise ValueError(f"need max_seq_length >= 4, got {max_seq_length}")
    encoder = tok if isinstance(tok, TextEncoder) else TextEncoder(tok)
    a = encoder.encode([r.text for r in records])
    paired = np.fromiter((r.text_pair is not None for r in records), dtype=bool, count=len(records))
    b = encoder.encode([r.text_pair for r in records if r.text_pair is not None])
    len_a = np.diff(a.offsets)
    len_b = np.zeros(len(records), dtype=np.int64)
    b_start = np.zeros(len(records), dtype=np.int64)
    len_b[paired], b_start[paired] = np.diff(b.offsets), b.offsets[:-1] + len(a.ids)
    has_tokens = (len_a > 0) & (~paired | (len_b > 0))

    over = np.where(paired, len_a + len_b > pair_budget, len_a > single)
    a_shorter = len_a <= len_b
    short = np.minimum(np.minimum(len_a, len_b), pair_budget // 2)
    keep_a = np.where(paired, np.where(a_shorter, short, pair_budget - short), single)
    keep_b = np.where(a_shorter, pair_budget - short, short)
    keep_a = np.where(over, keep_a, len_a)[has_tokens]
    keep_b = np.where(over & paired, keep_b, len_b)[has_tokens]
    paired_kept = paired[has_tokens]
    r = len(keep_a)
    zeros, ones = np.zeros(r, np.int64), np.ones(r, np.int64)
    pieces = fixed_pieces(
        start=np.stack([zeros, a.offsets[:-1][has_tokens], zeros, b_start[has_tokens], zeros], axis=1),
        length=np.stack([ones, keep_a, ones, keep_b, paired_kept.astype(np.int64)], axis=1),
        const=np.tile(np.array([cls_id, -1, sep_id, -1, sep_id], dtype=np.int64), (r, 1)),
    )
    src, const, offsets = gather_index(pieces)
    ids = np.concatenate([a.ids, b.ids])
    word_start = np.concatenate([a.word_start, b.word_start])
    kept = np.flatnonzero(has_tokens)
    return TextRows(
        doc_ids=tuple(records[i].id for i in kept.tolist()),
        offsets=offsets,
        ids=take(ids, src, const),
        word_start=take(word_start, src, const, const_value=True),
        segment_b_start=np.where(paired_kept, keep_a + 2, -1),
        truncated=(keep_a < len_a[has_tokens]) | (keep_b < len_b[has_tokens]),
        labels=pa.array([records[i].label for i in kept.tolist()], type=pa.string()),
        no_tokens=tuple(records[i].id for i in np.flatnonzero(~has_tokens).tolist()),
    )


def text_table(
    rows: TextRows, vocabulary: Sequence[str], schema: pa.Schema
) -> tuple[pa.Table, tuple[str, ...], tuple[str, ...]]:
    """The shard table of ``rows`` with label ids from ``vocabulary``, in row order.

    Rows whose label is outside the vocabulary are left out. Returns the table and the ids of
    the records kept and of those dropped as ``unknown_label``. Columns are those of
    ``schema``, from: ``input_ids``, ``word_start``, ``segment_b_start`` (uint16, null without
    a pair) and ``label`` (int32).
    """
    label_col, unknown = label_ids(rows.labels, vocabulary, dtype=np.int32)
    keep, kept, dropped = keep_documents(rows.doc_ids, unknown)
    tokens, offsets = row_tokens(rows.offsets, keep)
    b_start = rows.segment_b_start[keep]
    id_type = schema.field("input_ids").type.value_type
    columns = {
        "input_ids": lambda: list_array(rows.ids[tokens], offsets, id_type),
        "word_start": lambda: list_array(rows.word_start[tokens], offsets, pa.bool_()),
        "segment_b_start": lambda: pa.array(b_start.astype(np.uint16), mask=b_start < 0, type=pa.uint16()),
        "label": lambda: pa.array(label_col[keep], type=pa.int32()),
    }
    return schema_table(columns, schema, "sequence_classification"), kept, dropped


