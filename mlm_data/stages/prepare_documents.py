"""Stage one of preprocessing as pure functions: clean, split, tokenize and bucket documents.

These run on batches of documents inside one worker. Every document that does not make it
through is returned as a counted drop reason, and every surviving document is routed to a
(split, bucket) by a hash of its cleaned content, so identical documents meet in the same
bucket (where de-duplication keeps one) and bucket contents never depend on the runner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mlm_data import accounting
from mlm_data.accounting import Counts
from mlm_data.config.preprocess import CleanConfig
from mlm_data.instances.donors import DonationConfig, donate, donor_buckets
from mlm_data.instances.windows import payload_batch
from mlm_data.quality.documents import clean, cleaning_drop
from mlm_data.ragged import offsets_from_lengths, ranges_index
from mlm_data.reading.document_reader import Document
from mlm_data.text.sentences import split_lines, split_sentences
from mlm_data.text.tokenized import DIGEST_BYTES, TokenizedDocuments
from mlm_data.text.tokenizer import TextEncoder

TRAIN, VALIDATION = "train", "validation"


@dataclass(frozen=True)
class SplitDocument:
    id: str
    digest: bytes
    sentences: list[str]


def content_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def clean_and_split(docs: Sequence[Document], cfg: CleanConfig, counts: Counts, *,
                    already_clean: bool = False) -> list[SplitDocument]:
    """Normalise (unless a quality stage did, ``already_clean``), length-filter and
    sentence-split; drops are added to ``counts``."""
    split = split_sentences if cfg.sentence_split == "rules" else split_lines
    out: list[SplitDocument] = []
    for doc in docs:
        text = doc.text if already_clean else clean(doc.text, cfg)
        reason = cleaning_drop(text, cfg)
        if reason is not None:
            counts.drop(reason)
            continue
        out.append(SplitDocument(doc.id, content_digest(text), split(text)))
    return out


def tokenize_documents(encoder: TextEncoder, docs: Sequence[SplitDocument], counts: Counts) -> TokenizedDocuments:
    """Tokenize every sentence of every document in one batched call.

    Sentences that tokenize to nothing are removed; documents left without tokens are dropped
    as ``no_tokens``. The result has no empty sentence and no empty document, which pairing
    and packing rely on.
    """
    enc = encoder.encode_grouped([d.sentences for d in docs])
    sent_len = np.diff(enc.offsets)
    doc_sent_count = np.fromiter((len(d.sentences) for d in docs), dtype=np.int64, count=len(docs))
    doc_of_sentence = np.repeat(np.arange(len(docs)), doc_sent_count)
    keep_sent = sent_len > 0
    kept_per_doc = np.bincount(doc_of_sentence[keep_sent], minlength=len(docs))
    keep_doc = kept_per_doc > 0
    counts.drop(accounting.NO_TOKENS, int((~keep_doc).sum()))
    # Sentences of dropped documents have no tokens, so keep_sent already excludes them.
    sent_idx = np.flatnonzero(keep_sent)
    tok_idx = ranges_index(enc.offsets[:-1][sent_idx], sent_len[sent_idx])
    kept = [d for d, k in zip(docs, keep_doc.tolist()) if k]
    digests = np.frombuffer(b"".join(d.digest for d in kept), dtype=np.uint8).reshape(len(kept), DIGEST_BYTES)
    return TokenizedDocuments(
        doc_ids=tuple(d.id for d in kept),
        digests=digests,
        doc_offsets=offsets_from_lengths(kept_per_doc[keep_doc]),
        sent_offsets=offsets_from_lengths(sent_len[sent_idx]),
        ids=enc.ids[tok_idx],
        word_start=enc.word_start[tok_idx],
    )


def split_and_bucket(digests: np.ndarray, *, num_buckets: int, validation_buckets: int,
                     validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per item, whether it goes to validation and its bucket, from its 16-byte digest.

    Bytes 0-7 of the digest pick the bucket, bytes 8-15 the split, so the two choices are
    independent; neither depends on the seed, so changing the seed never moves an item
    between train and validation.
    """
    d = np.ascontiguousarray(digests)
    low = d[:, :8].copy().view("<u8").ravel()
    high = d[:, 8:16].copy().view("<u8").ravel()
    is_val = (high >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < validation_fraction
    bucket = np.where(is_val, low % np.uint64(max(1, validation_buckets)), low % np.uint64(num_buckets)).astype(np.int64)
    return is_val, bucket


def _group(is_val: np.ndarray, bucket: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    key_code = bucket * 2 + is_val
    return {(VALIDATION if code % 2 else TRAIN, code // 2): np.flatnonzero(key_code == code)
            for code in np.unique(key_code).tolist()}


def route(digests: np.ndarray, *, num_buckets: int, validation_buckets: int,
          validation_fraction: float) -> dict[tuple[str, int], np.ndarray]:
    """Indices of the items going to each ``(split, bucket)`` (see ``split_and_bucket``)."""
    if len(digests) == 0:
        return {}
    is_val, bucket = split_and_bucket(digests, num_buckets=num_buckets, validation_buckets=validation_buckets,
                                      validation_fraction=validation_fraction)
    return _group(is_val, bucket)


def assign_buckets(docs: TokenizedDocuments, *, num_buckets: int, validation_buckets: int,
                   validation_fraction: float, id_type: pa.DataType,
                   donations: DonationConfig | None = None) -> dict[tuple[str, int], pa.Table]:
    """The payload for each ``(split, bucket)`` the batch touches.

    Documents go to the bucket their content digest picks (``split_and_bucket``), so identical
    documents meet in one bucket. With ``donations`` (BERT pairs), the segments every document
    donates as random-next partners (``instances.donors``) go to random buckets of the
    document's split, in the same payloads.
    """
    if docs.num_docs == 0:
        return {}
    is_val, bucket = split_and_bucket(docs.digests, num_buckets=num_buckets, validation_buckets=validation_buckets,
                                      validation_fraction=validation_fraction)
    doc_groups = _group(is_val, bucket)
    seg_groups: dict[tuple[str, int], np.ndarray] = {}
    if donations is not None:
        given = donate(docs, donations)
        seg_val = is_val[given.source]
        seg_bucket = np.where(
            seg_val,
            donor_buckets(given.segments.digests, given.index, seed=donations.seed, num_buckets=validation_buckets),
            donor_buckets(given.segments.digests, given.index, seed=donations.seed, num_buckets=num_buckets),
        )
        seg_groups = _group(seg_val, seg_bucket)
    out: dict[tuple[str, int], pa.Table] = {}
    for key in sorted(doc_groups.keys() | seg_groups.keys()):
        batches = []
        if key in doc_groups:
            part = docs if len(doc_groups) == 1 and len(doc_groups[key]) == docs.num_docs else docs.select(doc_groups[key])
            batches.append(payload_batch(part, np.full(part.num_docs, -1), id_type))
        if key in seg_groups:
            members = seg_groups[key]
            batches.append(payload_batch(given.segments.select(members), given.index[members], id_type))
        out[key] = pa.Table.from_batches(batches)
    return out
