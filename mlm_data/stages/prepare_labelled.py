"""The classification tasks' pipeline stages as pure functions: clean, route and build rows.

Token and sequence classification share the engine's shape (read → encode → bucket → rows →
shards → manifest) but route by *record id* rather than content: all windows of one sentence
must meet in one bucket, so that one unknown tag drops the whole sentence. Label ids are
assigned in the second stage, once the label vocabulary of the whole input is known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from mlm_data import accounting
from mlm_data.accounting import Counts
from mlm_data.config.preprocess import CleanConfig, PreprocessConfig
from mlm_data.dataset import stats
from mlm_data.instances.bucket_rows import BucketRows
from mlm_data.instances.tagged_rows import TaggedRows, encode_tagged, tagged_table
from mlm_data.instances.text_rows import TextRows, encode_texts, text_table
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence
from mlm_data.seeding import derive_key, random_bits
from mlm_data.stages.prepare_documents import route
from mlm_data.text.cleaning import clean_text
from mlm_data.text.tokenizer import TextEncoder

LabelledRows = TaggedRows | TextRows


def clean_records(records: Sequence[TaggedSentence | LabelledText], cfg: CleanConfig) -> list[Any]:
    """Normalise words and texts like documents (a word that cleans to nothing keeps its slot:
    it simply yields no token, and the encoder counts it)."""
    def clean(text: str) -> str:
        return clean_text(text, normalization=cfg.unicode_normalization,
                          remove_control_chars=cfg.remove_control_chars)

    out: list[Any] = []
    for r in records:
        if isinstance(r, TaggedSentence):
            out.append(replace(r, words=tuple(clean(w) for w in r.words)))
        else:
            out.append(replace(r, text=clean(r.text), text_pair=None if r.text_pair is None else clean(r.text_pair)))
    return out


def encode_records(records: Sequence[TaggedSentence | LabelledText], cfg: PreprocessConfig, tok: Tokenizer,
                   encoder: TextEncoder, *, cls_id: int, sep_id: int) -> tuple[LabelledRows, Counts, dict[str, int]]:
    """Clean and tokenize a batch of records; labels stay strings until the vocabulary is known.

    Returns the rows, the records dropped for having no token, and facts for the manifest
    (token classification: words that produced no token, words cut to fit a window).
    """
    cleaned = clean_records(records, cfg.clean)
    facts: dict[str, int] = {}
    rows: LabelledRows
    if cfg.instances.task == "token_classification":
        rows = encode_tagged(tok, cleaned, max_seq_length=cfg.instances.max_seq_length, cls_id=cls_id,
                             sep_id=sep_id, stride=cfg.labels.stride, label_all_subtokens=cfg.labels.label_all_subtokens)
        facts = {"words_without_tokens": rows.words_without_tokens, "truncated_words": rows.truncated_words}
    else:
        rows = encode_texts(encoder, cleaned, max_seq_length=cfg.instances.max_seq_length, cls_id=cls_id, sep_id=sep_id)
    counts = Counts()
    counts.drop(accounting.NO_TOKENS, len(rows.no_tokens))
    return rows, counts, facts


def labels_in(records: Sequence[TaggedSentence | LabelledText]) -> set[str]:
    """Every label a batch of records uses (tags of tagged sentences)."""
    if not records:
        return set()
    if isinstance(records[0], TaggedSentence):
        return {t for r in records for t in r.tags}  # type: ignore[union-attr]
    return {r.label for r in records}  # type: ignore[union-attr]


def route_rows(rows: LabelledRows, *, num_buckets: int, validation_buckets: int,
               validation_fraction: float) -> dict[tuple[str, int], LabelledRows]:
    """Split rows over ``(split, bucket)`` by a hash of their record id."""
    if rows.num_rows == 0:
        return {}
    digests = np.frombuffer(b"".join(hashlib.blake2b(d.encode("utf-8"), digest_size=16).digest()
                                     for d in rows.doc_ids), dtype=np.uint8).reshape(-1, 16)
    routed = route(digests, num_buckets=num_buckets, validation_buckets=validation_buckets,
                   validation_fraction=validation_fraction)
    return {key: rows.select(members) for key, members in routed.items()}


def build_labelled_rows(parts: Sequence[pa.Table], *, task: str, vocabulary: Sequence[str], schema: pa.Schema,
                        seed: int, split: str, bucket: int, max_seq_length: int) -> BucketRows:
    """One bucket's shard table: label ids assigned, unknown-label records dropped, rows
    shuffled with a keyed permutation, with the bucket's accounting and statistics."""
    counts = Counts()
    if task == "token_classification":
        rows: LabelledRows = TaggedRows.concat(parts)
        table, kept, dropped = tagged_table(rows, vocabulary, schema)  # type: ignore[arg-type]
        labels = table.column("labels").combine_chunks().values.to_numpy()
        labels = labels[labels >= 0]
    else:
        rows = TextRows.concat(parts)
        table, kept, dropped = text_table(rows, vocabulary, schema)  # type: ignore[arg-type]
        labels = table.column("label").to_numpy()
        truncated = int(rows.truncated[np.isin(np.asarray(rows.doc_ids), list(kept))].sum()) if kept else 0
    counts.written = len(kept)
    counts.drop(accounting.UNKNOWN_LABEL, len(dropped))
    perm = np.argsort(random_bits(derive_key(seed, "row-order", split, bucket), np.arange(table.num_rows)),
                      kind="stable")
    table = table.take(pa.array(perm)) if table.num_rows else table
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy().astype(np.int64) \
        if table.num_rows else np.zeros(0, np.int64)
    label_counts = np.bincount(labels.astype(np.int64), minlength=len(vocabulary)) if len(vocabulary) else []
    st: dict[str, Any] = {
        "rows": int(table.num_rows),
        "tokens": int(lengths.sum()),
        "sequence_length": stats.histogram(lengths, stats.integer_edges(max_seq_length)),
        "label_counts": {name: int(n) for name, n in zip(vocabulary, label_counts)},
    }
    if task == "sequence_classification":
        st["truncated_rows"] = truncated
    return BucketRows(table=table, row_tokens=lengths, counts=counts, stats=st)
