"""From one window of a bucket's tokenized documents to rows of its shards.

``build_rows`` is the pure heart of the pipeline's second stage: create pairs or packs
(``dupe_factor`` times) from a window's documents (``windows.assemble_window`` has already
de-duplicated and ordered them), optionally mask statically, shuffle the rows, and return an
Arrow table plus the window's accounting and statistics. ``stages.write_bucket`` runs it over
a bucket's windows and streams the rows into shards.

Row order and static masks are keyed by (split, bucket, window) and the row's index in the
bucket, so a bucket's rows are the same whichever worker makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mlm_data import accounting
from mlm_data.accounting import Counts
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset import stats
from mlm_data.dataset.schema import IGNORE_INDEX, MLM_TASKS, schema_for
from mlm_data.dataset.shards import list_array
from mlm_data.instances.packing import pack_causal, pack_sentences
from mlm_data.instances.pairing import create_nsp_instances
from mlm_data.instances.rows import Pieces, assemble
from mlm_data.instances.windows import Window
from mlm_data.masking import mask_tokens
from mlm_data.ragged import offsets_from_lengths, take_ranges
from mlm_data.seeding import derive_key, keys_for, random_bits
from mlm_data.text.tokenized import TokenizedDocuments
from mlm_data.text.tokenizer import TokenizerInfo, vocab_tokens_for_random

#: Version of the rules that turn documents into rows, recorded in the manifest
#: (``instances_version``). 1: a bucket made rows in one piece, random-next partners came from
#: the same bucket. 2: a bucket makes rows window by window (row order and the last block or
#: pack are per window), random-next partners are segments donated from the whole corpus.
INSTANCES_VERSION = 2


@dataclass
class BucketRows:
    table: pa.Table
    row_tokens: np.ndarray  # (R,) tokens per row, specials included
    counts: Counts
    stats: dict[str, Any] = field(default_factory=dict)
    chunks_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Pieces of text that could not become part of a row, by reason: ``{reason: {chunks, tokens}}``."""


@dataclass(frozen=True)
class RowKeys:
    """Where a window's rows sit: what their shuffle and static masks are keyed by."""

    seed: int
    split: str
    bucket: int
    window: int
    first_row: int


def build_rows(
    window: Window,
    *,
    cfg: PreprocessConfig,
    tokenizer: TokenizerInfo,
    split: str,
    bucket: int,
    window_index: int = 0,
    first_row: int = 0,
) -> BucketRows:
    """Rows for the source documents of ``window``; ``first_row`` is the index in the bucket of
    the window's first row (static masks are keyed by it)."""
    counts = Counts()
    counts.drop(accounting.DUPLICATE, window.duplicates)
    docs, n_src = window.docs, window.num_sources
    task = cfg.instances.task
    max_len = cfg.instances.max_seq_length
    schema = schema_for(task, vocab_size=tokenizer.vocab_size, static_masking=cfg.masking.enabled)
    has_row = np.zeros(n_src, dtype=bool)
    dropped: dict[str, dict[str, int]] = {}
    keys = RowKeys(seed=cfg.seed, split=split, bucket=bucket, window=window_index, first_row=first_row)
    if task == "causal_lm":
        table, lengths, st = _causal_rows(docs, cfg=cfg, tokenizer=tokenizer, schema=schema, keys=keys)
        has_row[:] = True
    elif task in MLM_TASKS:
        table, lengths, st = _mlm_rows(window, has_row, dropped, cfg=cfg, tokenizer=tokenizer, schema=schema,
                                       keys=keys)
    else:
        raise ValueError(f"build_rows does not handle task {task!r}")
    counts.drop(accounting.NO_INSTANCES, int((~has_row).sum()))
    counts.written = int(has_row.sum())
    st["sequence_length"] = stats.histogram(lengths, stats.integer_edges(max_len))
    st["tokens_per_document"] = stats.histogram(docs.doc_num_tokens()[:n_src][has_row], stats.DOC_TOKEN_EDGES)
    st["rows"] = int(table.num_rows)
    st["tokens"] = int(lengths.sum())
    return BucketRows(table=table, row_tokens=lengths, counts=counts, stats=st, chunks_dropped=dropped)


def _row_order(n: int, keys: RowKeys) -> np.ndarray:
    """A keyed shuffle of a window's rows, so one document's instances do not sit together."""
    key = derive_key(keys.seed, "row-order", keys.split, keys.bucket, keys.window)
    return np.argsort(random_bits(key, np.arange(n)), kind="stable")


def _mlm_rows(window: Window, has_row: np.ndarray, dropped: dict[str, dict[str, int]], *, cfg: PreprocessConfig,
              tokenizer: TokenizerInfo, schema: pa.Schema, keys: RowKeys) -> tuple[pa.Table, np.ndarray, dict[str, Any]]:
    """Pairs or packs for every dupe, shuffled as pieces (before any token is copied), then
    assembled once, optionally masked statically."""
    task, max_len, sp = cfg.instances.task, cfg.instances.max_seq_length, tokenizer.special
    docs, n_src = window.docs, window.num_sources
    parts: list[Pieces] = []
    extras: dict[str, list[np.ndarray]] = {"segment_b_start": [], "next_sentence_label": []}
    dupe_stats: list[dict[str, Any]] = []
    for dupe in range(cfg.instances.dupe_factor):
        if task == "mlm_nsp":
            inst = create_nsp_instances(
                docs, num_sources=n_src, max_seq_length=max_len, short_seq_prob=cfg.instances.short_seq_prob,
                random_next_prob=cfg.instances.random_next_prob, seed=cfg.seed, dupe=dupe,
            )
            has_row[inst.doc_index] = True
            no_partner = dropped.setdefault(accounting.NO_PAIR_PARTNER, {"chunks": 0, "tokens": 0})
            no_partner["chunks"] += inst.dropped_chunks
            no_partner["tokens"] += inst.dropped_tokens
            parts.append(inst.pieces(cls_id=sp.cls, sep_id=sp.sep))  # type: ignore[arg-type]
            extras["segment_b_start"].append(inst.segment_b_start().astype(np.uint16))
            extras["next_sentence_label"].append(inst.is_random_next.astype(np.int8))
            edges = stats.length_edges(max_len)
            dupe_stats.append({
                "segment_a_length": stats.histogram(inst.a_end - inst.a_start, edges),
                "segment_b_length": stats.histogram(inst.b_end - inst.b_start, edges),
                "nsp": {"is_next": int((~inst.is_random_next).sum()), "random_next": int(inst.is_random_next.sum())},
                "truncated_rows": int(inst.truncated.sum()),
            })
        else:
            parts.append(pack_sentences(docs, max_seq_length=max_len, cls_id=sp.cls, sep_id=sp.sep,  # type: ignore[arg-type]
                                        cross_documents=task == "mlm_fullsent"))
            has_row[docs.doc_num_tokens()[:n_src] > 0] = True
    pieces = Pieces.concat(parts)
    order = _row_order(pieces.num_rows, keys)
    pieces = pieces.take(order)
    ids, word_start, offsets = assemble(pieces, docs.ids, docs.word_start)
    id_type = schema.field("input_ids").type.value_type
    cols: dict[str, pa.Array] = {"input_ids": list_array(ids, offsets, id_type),
                                 "word_start": list_array(word_start, offsets, pa.bool_())}
    for name, chunks in extras.items():
        if chunks:
            cols[name] = pa.array(np.concatenate(chunks)[order])
    st = stats.merge(dupe_stats)
    if cfg.masking.enabled:
        masked_ids, positions, labels, m_offsets = _static_mask(ids, word_start, offsets, cfg=cfg,
                                                                tokenizer=tokenizer, keys=keys)
        cols["input_ids"] = list_array(masked_ids, offsets, id_type)
        cols["masked_positions"] = list_array(positions.astype(np.uint16), m_offsets, pa.uint16())
        cols["masked_labels"] = list_array(labels, m_offsets, id_type)
        st["masked_tokens"] = int(m_offsets[-1])
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return table, np.diff(offsets), st


def _causal_rows(docs: TokenizedDocuments, *, cfg: PreprocessConfig, tokenizer: TokenizerInfo, schema: pa.Schema,
                 keys: RowKeys) -> tuple[pa.Table, np.ndarray, dict[str, Any]]:
    blocks = pack_causal(docs, block_size=cfg.instances.max_seq_length, eos_id=tokenizer.special.eos)  # type: ignore[arg-type]
    n = len(blocks.row_offsets) - 1
    order = _row_order(n, keys)
    lengths = np.diff(blocks.row_offsets)[order]
    ids = take_ranges(blocks.ids, blocks.row_offsets[:-1][order], lengths)
    start_counts = np.diff(blocks.doc_start_offsets)[order]
    starts = take_ranges(blocks.doc_start_values, blocks.doc_start_offsets[:-1][order], start_counts)
    id_type = schema.field("input_ids").type.value_type
    table = pa.Table.from_arrays([list_array(ids, offsets_from_lengths(lengths), id_type),
                                  list_array(starts, offsets_from_lengths(start_counts), pa.uint16())], schema=schema)
    return table, lengths, {}


def _static_mask(ids: np.ndarray, word_start: np.ndarray, offsets: np.ndarray, *, cfg: PreprocessConfig,
                 tokenizer: TokenizerInfo, keys: RowKeys,
                 chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask rows once, with the same function the loader uses dynamically.

    Returns the corrupted ids, and per row the chosen positions and their original ids (flat,
    with their offsets). Rows are densified ``chunk_rows`` at a time so memory stays bounded.
    """
    flat = ids.astype(np.int64)
    specials = np.asarray(tokenizer.special.all_ids(), dtype=np.int64)
    random_ids = vocab_tokens_for_random(tokenizer)
    n = len(offsets) - 1
    out_ids = ids.copy()
    positions: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    per_row = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        lengths = np.diff(offsets[lo:hi + 1])
        valid = np.arange(int(lengths.max())) < lengths[:, None]
        span = slice(offsets[lo], offsets[hi])
        dense = np.zeros(valid.shape, dtype=np.int64)
        dense[valid] = flat[span]
        dense_ws = np.zeros(valid.shape, dtype=bool)
        dense_ws[valid] = word_start[span]
        row_keys = keys_for(cfg.seed, "static-mask", keys.split, keys.bucket,
                            index=keys.first_row + np.arange(lo, hi))
        masked, labels = mask_tokens(
            dense, maskable=valid & ~np.isin(dense, specials), word_start=dense_ws, keys=row_keys,
            config=cfg.masking, mask_token_id=int(tokenizer.special.mask),  # type: ignore[arg-type]
            random_token_ids=random_ids,
        )
        out_ids[span] = masked[valid]
        chosen = labels != IGNORE_INDEX
        per_row[lo:hi] = chosen.sum(axis=1)
        rows, cols = np.nonzero(chosen)
        positions.append(cols)
        labels_out.append(labels[rows, cols])
    m_offsets = offsets_from_lengths(per_row)
    pos_flat = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    lab_flat = np.concatenate(labels_out) if labels_out else np.zeros(0, np.int64)
    return out_ids, pos_flat, lab_flat, m_offsets
