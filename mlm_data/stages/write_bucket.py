"""Stage two of preprocessing as one call: a bucket's payloads in, its shards out.

``write_document_bucket`` reads the bucket's payloads once for the order keys and token counts
of their rows (a few bytes a document), plans windows of about ``output.bucket_memory_mb`` worth
of tokens (``instances.windows``), then for each window re-reads the payloads, keeps the
window's rows, makes them into training rows (``instances.bucket_rows``) and streams those into
the bucket's shards (``dataset.shard_writer``). Only one window is in memory at a time, so the
stage's memory depends on the knob, not on the bucket, the corpus or the shard size.

``payloads`` is called once per pass and must yield the same payload tables each time, in any
order (a Beam GroupByKey result can be iterated again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlm_data.accounting import Counts
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset import stats
from mlm_data.dataset.assemble import WrittenBucket
from mlm_data.dataset.shard_writer import ShardWriter
from mlm_data.instances.bucket_rows import BucketRows, build_rows
from mlm_data.instances.windows import (
    assemble_window,
    is_document,
    plan_windows,
    row_keys_and_tokens,
    select_rows,
    window_tokens,
)
from mlm_data.lifetime import ProcessId
from mlm_data.text.tokenizer import TokenizerInfo


@dataclass(frozen=True)
class WindowDone:
    """What one window added: rows and their tokens, and the document tokens it consumed."""

    rows: int
    row_tokens: int
    document_tokens: int


def write_document_bucket(payloads: Callable[[], Iterable[pa.Table | pa.RecordBatch]], *, cfg: PreprocessConfig,
                          tokenizer: TokenizerInfo, split: str, bucket: int, id_itemsize: int,
                          driver: ProcessId | None = None,
                          on_window: Callable[[WindowDone], None] | None = None) -> WrittenBucket:
    """Make and write the rows of one bucket of tokenized documents, a window at a time.

    If ``driver`` (the launcher's process) is gone, the worker stops before it publishes
    another shard. ``on_window`` (if given) is called after each window's rows are written and
    dropped (for progress reports, and a moment to hand freed memory back).
    """
    keys, tokens, is_doc = [], [], []
    for table in payloads():
        k, t = row_keys_and_tokens(table, seed=cfg.seed)
        keys.append(k)
        tokens.append(t)
        is_doc.append(is_document(table))
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    all_tokens = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    plan = plan_windows(all_keys, all_tokens, max_tokens=window_tokens(cfg.output.bucket_memory_mb,
                                                               dupe_factor=cfg.instances.dupe_factor))
    docs = np.concatenate(is_doc) if is_doc else np.zeros(0, bool)
    doc_tokens = np.bincount(plan.window_of(all_keys[docs]), weights=all_tokens[docs], minlength=plan.num_windows)
    del keys, tokens, is_doc, all_keys, all_tokens, docs
    counts: list[Counts] = []
    parts: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    first_row = 0
    with _shard_writer(cfg, split, bucket, id_itemsize, driver) as writer:
        for w in range(plan.num_windows):
            selected = (select_rows(t, plan, w, seed=cfg.seed) for t in payloads())
            window = assemble_window([s for s in selected if s is not None], seed=cfg.seed,
                                     deduplicate=cfg.clean.deduplicate)
            rows = build_rows(window, cfg=cfg, tokenizer=tokenizer, split=split, bucket=bucket, window_index=w,
                              first_row=first_row)
            del window
            writer.write(rows.table, rows.row_tokens)
            first_row += rows.table.num_rows
            counts.append(rows.counts)
            parts.append(rows.stats)
            dropped.append(rows.chunks_dropped)
            progress = WindowDone(rows=rows.table.num_rows, row_tokens=int(rows.row_tokens.sum()),
                                  document_tokens=int(doc_tokens[w]))
            del rows
            if on_window is not None:
                on_window(progress)
        shards = writer.close()
    return WrittenBucket(split=split, shards=shards, counts=Counts.total(counts), stats=stats.merge(parts),
                        chunks_dropped=stats.merge(dropped))


def write_rows_bucket(rows: BucketRows, *, cfg: PreprocessConfig, split: str, bucket: int,
                      id_itemsize: int, driver: ProcessId | None = None) -> WrittenBucket:
    """Write a bucket whose rows were made in one piece (the labelled tasks)."""
    with _shard_writer(cfg, split, bucket, id_itemsize, driver) as writer:
        writer.write(rows.table, rows.row_tokens)
        shards = writer.close()
    return WrittenBucket(split=split, shards=shards, counts=rows.counts, stats=rows.stats,
                        chunks_dropped=rows.chunks_dropped)


def _shard_writer(cfg: PreprocessConfig, split: str, bucket: int, id_itemsize: int,
                  driver: ProcessId | None) -> ShardWriter:
    return ShardWriter(cfg.output.path, split=split, bucket=bucket,  # type: ignore[arg-type]
                       target_bytes=cfg.output.target_shard_bytes, id_itemsize=id_itemsize,
                       ipc_format=cfg.output.ipc_format, driver=driver)
