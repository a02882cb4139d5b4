"""Labelled records to shard rows: what both classification tasks share.

Two stages, because label ids need the whole dataset's label vocabulary and tokenization does
not. ``encode_tagged`` (``instances.tagged_rows``) / ``encode_texts`` (``instances.text_rows``)
turn a batch of records into rows that still carry their labels as strings (``to_arrow`` is
the payload between pipeline stages); once the vocabulary is known (given, reused from another
dataset, or ``order_labels`` of every label seen), ``tagged_table`` / ``text_table`` assign the
ids with ``label_ids`` and build the shard table, dropping every example that has a label
outside the vocabulary.
"""


from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlm_data.dataset.schema import IGNORE_INDEX
from mlm_data.errors import ConfigError
from mlm_data.instances.rows import (
    offsets_from_lengths,
    ranges_index,
)

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def order_labels(labels: Iterable[str]) -> list[str]:
    """The label vocabulary (its order gives the ids) when none is configured.

    The rule depends only on the set of labels, never on the order they were seen in:

    * every label an integer written plainly ("0", "7", "-1"): numeric order, so that a
      dataset labelled 0..n-1 keeps its ids (string order would put "10" before "2");
    * otherwise "O" (the outside tag of BIO/IOB schemes) first when present, so it gets id 0,
      then the rest in code point order.

    >>> order_labels(["I-PER", "O", "B-PER", "O"]), order_labels(["10", "2", "0"])
    (['O', 'B-PER', 'I-PER'], ['0', '2', '10'])
    """
    unique = set(labels)
    if unique and all(_INTEGER.fullmatch(label) for label in unique):
        return sorted(unique, key=int)
    return (["O"] if "O" in unique else []) + sorted(unique - {"O"})


def example_ids(doc_ids: Sequence[str]) -> np.ndarray:
    """(R,) uint64 stable ids of records: the first 8 bytes (little-endian) of
    ``blake2b(doc_id.encode("utf-8"), digest_size=8)``, reproducible in any language."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(d.encode("utf-8"), digest_size=8).digest(), "little") for d in doc_ids),
        dtype=np.uint64, count=len(doc_ids),
    )


def label_ids(
    label_strings: pa.Array | pa.ChunkedArray | Sequence[str | None],
    vocabulary: Sequence[str],
    *,
    offsets: np.ndarray | None = None,
    dtype: type[np.integer] = np.int16,
) -> tuple[np.ndarray, np.ndarray]:
    """Label ids for label strings, vectorised; nulls (unlabelled positions) get -100.

    Returns ``(ids, unknown)``: ``ids`` of ``dtype`` with ``IGNORE_INDEX`` where a label is null
    or outside ``vocabulary``, and ``unknown``, True where a label is outside the vocabulary:
    per value, or per row when ``offsets`` (R+1) say which values form a row.

    >>> ids, unknown = label_ids(["O", None, "B-X", "?"], ["O", "B-X"], offsets=np.array([0, 2, 4]))
    >>> ids.tolist(), unknown.tolist()
    ([0, -100, 1, -100], [False, True])
    """
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("the label vocabulary has duplicates")
    limit = int(np.iinfo(dtype).max)
    if len(vocabulary) > limit + 1:
        raise ConfigError(f"labels: {len(vocabulary)} labels do not fit the schema's {np.dtype(dtype).name} "
                          f"label ids (at most {limit + 1} labels)")
    if isinstance(label_strings, pa.ChunkedArray):
        values = label_strings.combine_chunks()
    elif isinstance(label_strings, pa.Array):
        values = label_strings
    else:
        values = pa.array(list(label_strings), type=pa.string())
    index = pc.index_in(values, value_set=pa.array(list(vocabulary), type=pa.string()))
    unknown = pc.and_(pc.is_valid(values), pc.is_null(index)).to_numpy(zero_copy_only=False)
    ids = index.fill_null(IGNORE_INDEX).to_numpy(zero_copy_only=False).astype(dtype)
    if offsets is not None:
        seen = np.concatenate([[0], np.cumsum(unknown, dtype=np.int64)])
        unknown = seen[offsets[1:]] > seen[offsets[:-1]]
    return ids, unknown


# --------------------------------------------------------------------------------------------
# Helpers


def row_tokens(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token indices of ``rows`` (in order) and the offsets of the selection."""
    lengths = np.diff(offsets)[rows]
    return ranges_index(offsets[:-1][rows], lengths), offsets_from_lengths(lengths)


def keep_documents(doc_ids: tuple[str, ...], unknown: np.ndarray) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Rows to keep (no row of their document has an unknown label), documents kept and dropped."""
    encoded = pa.array(doc_ids, type=pa.string()).dictionary_encode()
    doc_of = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    bad = np.bincount(doc_of[unknown], minlength=len(names)) > 0
    keep = np.flatnonzero(~bad[doc_of])
    return keep, tuple(n for n, b in zip(names, bad.tolist()) if not b), tuple(n for n, b in zip(names, bad.tolist()) if b)


def schema_table(columns: dict[str, Callable[[], pa.Array]], schema: pa.Schema, task: str) -> pa.Table:
    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise ValueError(f"schema columns {missing} are not produced for {task}")
    return pa.Table.from_arrays([columns[f.name]() for f in schema], schema=schema)


def as_table(data: pa.Table | pa.RecordBatch) -> pa.Table:
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    return table.combine_chunks()


def flat_list(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Row offsets (from 0) and flat values of a list column."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.flatten()


def sorted_concat(parts: Iterable[object], keys: list[str]) -> pa.Table:
    tables = [as_table(p.to_arrow() if hasattr(p, "to_arrow") else p) for p in parts]  # type: ignore[union-attr]
    if not tables:
        raise ValueError("concat needs at least one part")
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))
