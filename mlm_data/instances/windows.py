"""A bucket in windows: bounded slices of its documents, made into rows one at a time.

A bucket's size follows the corpus and the shard size (the planner makes a bucket fill about
one shard, ~60 M tokens at the default 128 MiB), far more than a worker should hold at once.
So a bucket is processed in *windows* of about ``window_tokens(memory_mb)`` tokens, and the
peak memory of the bucket stage is set by ``output.bucket_memory_mb`` alone.

Every payload row (a document, or a segment donated for random-next partners, see
``donors``) has an *order key*: a keyed hash of its content digest (and segment index). The
documents of a bucket are taken in key order, which is a keyed random order that depends only
on the bucket's contents, and cut into consecutive windows of ``window_tokens`` tokens (the
last one smaller). Planning needs only each row's key and token count, read in a first pass
over the bucket's payloads; each window then re-reads the payloads and keeps the rows whose
keys fall in its range. Identical documents have identical keys, so they always meet in one
window, where de-duplication keeps the one with the smallest id; a cut never separates equal
keys.

The payload that carries a bucket's share of a batch between the stages is an Arrow table of
up to two record batches (``payload_batch``: documents, then donated segments): the columns of
``TokenizedDocuments.to_arrow`` plus ``segment``, -1 for a document and the donation index for
a donated segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlm_data.instances.donors import first8
from mlm_data.seeding import derive_key, random_bits
from mlm_data.text.tokenized import DIGEST_BYTES, TokenizedDocuments

#: Peak bytes of the bucket stage per token of a window and per ``dupe_factor`` (the window's
#: payload rows and documents, pair pieces, assembled rows, the Arrow table, the record batch
#: being written): BERT-pairs runs measure 24-34 bytes per window token above the process's
#: base (``docs/dataflow.md``, *Worker memory*); the upper end, so the knob is not exceeded.
BYTES_PER_WINDOW_TOKEN = 32


def window_tokens(memory_mb: int, *, dupe_factor: int = 1) -> int:
    """Tokens per window for ``output.bucket_memory_mb`` (each dupe makes the window's rows again).

    >>> window_tokens(256), window_tokens(256, dupe_factor=2)
    (8388608, 4194304)
    """
    return max(1, memory_mb * (1 << 20) // (BYTES_PER_WINDOW_TOKEN * dupe_factor))


def payload_batch(docs: TokenizedDocuments, segment: np.ndarray, id_type: pa.DataType) -> pa.RecordBatch:
    """The shuffle payload: ``docs`` (documents and donated segments) with their ``segment``."""
    batch = docs.to_arrow(id_type)
    return pa.RecordBatch.from_arrays([*batch.columns, pa.array(np.asarray(segment, dtype=np.int32))],
                                      names=[*batch.schema.names, "segment"])


def _digests(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    col = table.column("digest")
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = [np.frombuffer(c.buffers()[1], dtype=np.uint8, count=len(c) * DIGEST_BYTES, offset=c.offset * DIGEST_BYTES)
             for c in chunks if len(c)]
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint8)).reshape(-1, DIGEST_BYTES)


def _segments(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    return np.asarray(table.column("segment").to_numpy(), dtype=np.int64)


def is_document(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """(N,) bool: which payload rows are documents (the others are donated segments)."""
    return _segments(table) < 0


def order_keys(digests: np.ndarray, segment: np.ndarray, *, seed: int) -> np.ndarray:
    """(N,) uint64 order keys: documents by ``(seed, digest)``, segments by ``(seed, digest, index)``."""
    low = first8(digests)
    doc_keys = random_bits(derive_key(seed, "doc-order"), low)
    seg_keys = random_bits(derive_key(seed, "segment-order"), low, np.maximum(segment, 0).astype(np.uint64))
    return np.where(segment < 0, doc_keys, seg_keys)


def row_keys_and_tokens(table: pa.Table | pa.RecordBatch, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What planning needs from one payload: each row's order key and token count."""
    keys = order_keys(_digests(table), _segments(table), seed=seed)
    tokens = pc.list_value_length(table.column("ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    return keys, tokens


@dataclass(frozen=True)
class WindowPlan:
    """Windows as key ranges: window ``w`` holds the keys in ``[cuts[w-1], cuts[w])``."""

    cuts: np.ndarray  # (W-1,) uint64, increasing: the first key of windows 1..W-1

    @property
    def num_windows(self) -> int:
        return len(self.cuts) + 1

    def window_of(self, keys: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cuts, keys, side="right")


def plan_windows(keys: np.ndarray, tokens: np.ndarray, *, max_tokens: int) -> WindowPlan:
    """Cut the key-ordered rows into windows of ``max_tokens`` tokens each, the last one smaller.

    Full windows rather than ``ceil(total / max_tokens)`` equal ones: then a bucket's peak
    memory is the same whatever its size (once it holds one window's worth), so the peak of a
    run does not creep up with the corpus. A window ends with the row that reaches its share,
    and never between two rows of equal key:

    >>> plan = plan_windows(np.array([5, 1, 3, 3, 9], np.uint64), np.array([2, 2, 2, 2, 2]), max_tokens=4)
    >>> plan.cuts.tolist(), plan.window_of(np.array([1, 3, 5, 9], np.uint64)).tolist()
    ([5, 9], [0, 0, 1, 2])
    """
    total = int(tokens.sum())
    n_windows = max(1, math.ceil(total / max(1, max_tokens)))
    if n_windows == 1 or len(keys) < 2:
        return WindowPlan(cuts=np.zeros(0, np.uint64))
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    cum = np.cumsum(tokens[order])
    starts = np.searchsorted(cum, max_tokens * np.arange(1, n_windows), side="left") + 1
    # A window may only start where the key changes, so equal keys stay together.
    run_starts = np.flatnonzero(k[1:] != k[:-1]) + 1
    at = np.searchsorted(run_starts, starts, side="left")
    valid = at < len(run_starts)
    return WindowPlan(cuts=np.unique(k[run_starts[at[valid]]]))


@dataclass(frozen=True)
class Window:
    """One window's rows: ``docs`` holds the ``num_sources`` documents that make rows (in key
    order, de-duplicated), then the donated segments that serve as random-next partners."""

    docs: TokenizedDocuments
    num_sources: int
    duplicates: int  # documents dropped as exact duplicates of a kept one


def select_rows(table: pa.Table | pa.RecordBatch, plan: WindowPlan, window: int, *, seed: int) -> pa.Table | None:
    """The rows of one payload that belong to ``window`` (None if there are none)."""
    keys = order_keys(_digests(table), _segments(table), seed=seed)
    rows = np.flatnonzero(plan.window_of(keys) == window)
    if len(rows) == 0:
        return None
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return table.take(pa.array(rows))


def assemble_window(parts: Iterable[pa.Table], *, seed: int, deduplicate: bool) -> Window:
    """A window from the rows ``select_rows`` picked out of every payload, in any order.

    Documents are ordered by (key, digest, id) and come first, then segments by (key, digest,
    index); identical documents keep the smallest id (if ``deduplicate``), identical segments
    (donated by identical documents) one copy.
    """
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return Window(TokenizedDocuments.empty(), 0, 0)
    table = pa.concat_tables(parts)
    digests = _digests(table)
    segment = _segments(table)
    keys = order_keys(digests, segment, seed=seed)
    is_segment = segment >= 0
    ids = np.asarray(table.column("doc_id").to_pylist(), dtype=str)
    d = np.ascontiguousarray(digests)
    hi = d[:, :8].copy().view("<u8").ravel()
    lo = d[:, 8:].copy().view("<u8").ravel()
    order = np.lexsort((segment, ids, lo, hi, keys, is_segment))
    same_as_previous = np.zeros(len(order), dtype=bool)
    same_as_previous[1:] = ((hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
                            & (segment[order][1:] == segment[order][:-1]))
    if not deduplicate:
        same_as_previous &= is_segment[order]
    duplicates = int((same_as_previous & ~is_segment[order]).sum())
    keep = order[~same_as_previous]
    num_sources = int((~is_segment[keep]).sum())
    ordered = table.take(pa.array(keep))
    del table, parts
    return Window(TokenizedDocuments.from_arrow(ordered), num_sources, duplicates)
