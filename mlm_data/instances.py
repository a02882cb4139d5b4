"""From one bucket of tokenized documents to the rows of its shards.

``build_rows`` is the pure heart of the pipeline's second stage: de-duplicate, order the
documents, create pairs or packs (``dupe_factor`` times), optionally mask statically, shuffle
the rows, and return an Arrow table plus the bucket's accounting and statistics. The Beam
stage around it only groups documents by bucket and writes what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mlm_data import accounting, stats
from mlm_data.accounting import Counts
from mlm_data.config import PreprocessConfig
from mlm_data.masking import mask_tokens
from mlm_data.packing import pack_causal, pack_sentences
from mlm_data.pairing import create_nsp_instances
from mlm_data.rows import Pieces, assemble
from mlm_data.schema import IGNORE_INDEX, schema_for
from mlm_data.seeding import derive_key, keys_for, random_bits
from mlm_data.shards import list_array
from mlm_data.tokenization import TokenizerInfo, vocab_tokens_for_random
from mlm_data.tokenized import TokenizedDocuments


@dataclass
class BucketRows:
    table: pa.Table
    row_tokens: np.ndarray  # (R,) tokens per row, specials included
    counts: Counts
    stats: dict[str, Any] = field(default_factory=dict)


def unique_by_digest(docs: TokenizedDocuments) -> np.ndarray:
    """Indices of the documents to keep, one per content digest: the one with the smallest id."""
    order = sorted(range(docs.num_docs), key=docs.doc_ids.__getitem__)
    if not order:
        return np.zeros(0, dtype=np.int64)
    keys = np.ascontiguousarray(docs.digests[order]).view(f"V{docs.digests.shape[1]}").ravel()
    _, first = np.unique(keys, return_index=True)
    return np.asarray(order, dtype=np.int64)[np.sort(first)]


def keyed_order(docs: TokenizedDocuments, members: np.ndarray, *, seed: int) -> np.ndarray:
    """``members`` in a keyed random order, so neighbours in a row come from anywhere.

    The key of a document is its content digest, so the order never depends on arrival."""
    if len(members) == 0:
        return members
    first8 = np.ascontiguousarray(docs.digests[members, :8]).view("<u8").ravel()
    return members[np.argsort(random_bits(derive_key(seed, "doc-order"), first8), kind="stable")]


def build_rows(
    docs: TokenizedDocuments,
    *,
    cfg: PreprocessConfig,
    tokenizer: TokenizerInfo,
    split: str,
    bucket: int,
) -> BucketRows:
    counts = Counts()
    members = unique_by_digest(docs) if cfg.clean.deduplicate else np.arange(docs.num_docs)
    counts.drop(accounting.DUPLICATE, docs.num_docs - len(members))
    docs = docs.select(keyed_order(docs, members, seed=cfg.seed))
    task = cfg.instances.task
    max_len = cfg.instances.max_seq_length
    sp = tokenizer.special
    schema = schema_for(task, vocab_size=tokenizer.vocab_size, static_masking=cfg.masking.enabled)
    id_type = schema.field("input_ids").type.value_type
    tables: list[pa.Table] = []
    row_tokens: list[np.ndarray] = []
    bucket_stats: list[dict[str, Any]] = []
    has_row = np.zeros(docs.num_docs, dtype=bool)

    for dupe in range(cfg.instances.dupe_factor):
        extra: dict[str, pa.Array] = {}
        st: dict[str, Any] = {}
        if task == "mlm_nsp":
            inst = create_nsp_instances(
                docs, max_seq_length=max_len, short_seq_prob=cfg.instances.short_seq_prob,
                random_next_prob=cfg.instances.random_next_prob, seed=cfg.seed, dupe=dupe,
            )
            has_row[inst.doc_index] = True
            pieces = inst.pieces(cls_id=sp.cls, sep_id=sp.sep)  # type: ignore[arg-type]
            extra["segment_b_start"] = pa.array(inst.segment_b_start().astype(np.uint16))
            extra["next_sentence_label"] = pa.array(inst.is_random_next.astype(np.int8))
            a_len, b_len = inst.a_end - inst.a_start, inst.b_end - inst.b_start
            edges = stats.length_edges(max_len)
            st.update({
                "segment_a_length": stats.histogram(a_len, edges),
                "segment_b_length": stats.histogram(b_len, edges),
                "nsp": {"is_next": int((~inst.is_random_next).sum()), "random_next": int(inst.is_random_next.sum())},
                "truncated_rows": int(inst.truncated.sum()),
            })
        elif task in ("mlm_fullsent", "mlm_docsent"):
            pieces = pack_sentences(docs, max_seq_length=max_len, cls_id=sp.cls, sep_id=sp.sep,  # type: ignore[arg-type]
                                    cross_documents=task == "mlm_fullsent")
            has_row[docs.doc_num_tokens() > 0] = True
        elif task == "causal_lm":
            blocks = pack_causal(docs, block_size=max_len, eos_id=sp.eos)  # type: ignore[arg-type]
            has_row[:] = True
            ids_col = list_array(blocks.ids, blocks.row_offsets, id_type)
            starts_col = list_array(blocks.doc_start_values, blocks.doc_start_offsets, pa.uint16())
            table = pa.Table.from_arrays([ids_col, starts_col], schema=schema)
            tables.append(table)
            lengths = np.diff(blocks.row_offsets)
            row_tokens.append(lengths)
            st["sequence_length"] = stats.histogram(lengths, stats.length_edges(max_len))
            bucket_stats.append(st)
            continue
        else:
            raise ValueError(f"build_rows does not handle task {task!r}")

        table, lengths = _assemble_mlm(docs, pieces, schema, id_type, extra)
        if cfg.masking.enabled:
            table, n_masked = _static_mask(table, cfg=cfg, tokenizer=tokenizer, split=split, bucket=bucket,
                                           dupe=dupe, schema=schema)
            st["masked_tokens"] = n_masked
        st["sequence_length"] = stats.histogram(lengths, stats.length_edges(max_len))
        tables.append(table)
        row_tokens.append(lengths)
        bucket_stats.append(st)

    no_rows = int((~has_row).sum())
    counts.drop(accounting.NO_INSTANCES, no_rows)
    counts.written = int(has_row.sum())
    doc_tokens = docs.doc_num_tokens()[has_row]
    table = pa.concat_tables([pa.Table.from_arrays(t.columns, schema=schema) for t in tables]) \
        if tables else schema.empty_table()
    lengths = np.concatenate(row_tokens) if row_tokens else np.zeros(0, np.int64)
    perm = np.argsort(random_bits(derive_key(cfg.seed, "row-order", split, bucket), np.arange(table.num_rows)),
                      kind="stable")
    table = table.take(pa.array(perm)) if table.num_rows else table
    merged = stats.merge(bucket_stats)
    merged["tokens_per_document"] = stats.histogram(doc_tokens, stats.DOC_TOKEN_EDGES)
    merged["rows"] = int(table.num_rows)
    merged["tokens"] = int(lengths.sum())
    return BucketRows(table=table, row_tokens=lengths[perm], counts=counts, stats=merged)


def _assemble_mlm(docs: TokenizedDocuments, pieces: Pieces, schema: pa.Schema, id_type: pa.DataType,
                  extra: dict[str, pa.Array]) -> tuple[pa.Table, np.ndarray]:
    ids, word_start, offsets = assemble(pieces, docs.ids, docs.word_start)
    cols = {"input_ids": list_array(ids, offsets, id_type), "word_start": list_array(word_start, offsets, pa.bool_())}
    cols.update(extra)
    names = [f.name for f in schema if f.name in cols]
    table = pa.Table.from_arrays([cols[n] for n in names], names=names)
    return table, np.diff(offsets)


def _static_mask(table: pa.Table, *, cfg: PreprocessConfig, tokenizer: TokenizerInfo, split: str,
                 bucket: int, dupe: int, schema: pa.Schema, chunk_rows: int = 4096) -> tuple[pa.Table, int]:
    """Mask rows once, with the same function the loader uses dynamically, and store the
    chosen positions and original ids next to the corrupted sequence.

    Rows are densified ``chunk_rows`` at a time so memory stays bounded by the chunk."""
    ids_col = table.column("input_ids").combine_chunks()
    offsets = ids_col.offsets.to_numpy().astype(np.int64)
    flat = ids_col.values.to_numpy().astype(np.int64)
    ws_flat = table.column("word_start").combine_chunks().values.to_numpy(zero_copy_only=False)
    specials = np.asarray(tokenizer.special.all_ids(), dtype=np.int64)
    random_ids = vocab_tokens_for_random(tokenizer)
    n = len(offsets) - 1
    out_ids = flat.copy()
    positions: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    per_row = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        lengths = np.diff(offsets[lo:hi + 1])
        t = int(lengths.max())
        valid = np.arange(t)[None, :] < lengths[:, None]
        span = slice(offsets[lo], offsets[hi])
        dense = np.zeros((hi - lo, t), dtype=np.int64)
        dense[valid] = flat[span]
        word_start = np.zeros((hi - lo, t), dtype=bool)
        word_start[valid] = ws_flat[span]
        keys = keys_for(cfg.seed, "static-mask", split, bucket, dupe, index=np.arange(lo, hi))
        masked, labels = mask_tokens(
            dense, maskable=valid & ~np.isin(dense, specials), word_start=word_start, keys=keys,
            config=cfg.masking, mask_token_id=int(tokenizer.special.mask),  # type: ignore[arg-type]
            random_token_ids=random_ids,
        )
        out_ids[span] = masked[valid]
        chosen = labels != IGNORE_INDEX
        per_row[lo:hi] = chosen.sum(axis=1)
        rows, cols = np.nonzero(chosen)
        positions.append(cols)
        labels_out.append(labels[rows, cols])
    m_offsets = np.concatenate([[0], np.cumsum(per_row)])
    id_type = schema.field("input_ids").type.value_type
    pos_flat = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    lab_flat = np.concatenate(labels_out) if labels_out else np.zeros(0, np.int64)
    table = table.set_column(0, "input_ids", list_array(out_ids, offsets, id_type))
    table = table.append_column("masked_positions", list_array(pos_flat.astype(np.uint16), m_offsets, pa.uint16()))
    table = table.append_column("masked_labels", list_array(lab_flat, m_offsets, id_type))
    return table, int(per_row.sum())
