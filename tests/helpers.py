"""Synthetic tokenized documents whose token ids say where they came from."""

from __future__ import annotations

import hashlib

import numpy as np

from mlm_data.ragged import offsets_from_lengths
from mlm_data.text.tokenized import TokenizedDocuments


def synthetic_docs(sentence_lengths: list[list[int]], *, id_offset: int = 1000, ids: list[str] | None = None,
                   word_every: int = 2) -> TokenizedDocuments:
    """Documents with the given sentence lengths; token id = id_offset + global token index.

    Every ``word_every``-th token starts a word, so whole-word logic has multi-token words.
    """
    doc_sents = np.array([len(s) for s in sentence_lengths], dtype=np.int64)
    sent_len = np.array([n for s in sentence_lengths for n in s], dtype=np.int64)
    n = int(sent_len.sum())
    sent_offsets = offsets_from_lengths(sent_len)
    word_start = (np.arange(n) % word_every) == 0
    word_start[sent_offsets[:-1][sent_len > 0]] = True
    names = ids or [f"doc{i:05d}" for i in range(len(sentence_lengths))]
    digests = np.frombuffer(b"".join(hashlib.blake2b(x.encode(), digest_size=16).digest() for x in names),
                            dtype=np.uint8).reshape(len(names), 16)
    return TokenizedDocuments(
        doc_ids=tuple(names), digests=digests, doc_offsets=offsets_from_lengths(doc_sents),
        sent_offsets=sent_offsets, ids=(id_offset + np.arange(n)).astype(np.uint32), word_start=word_start,
    )


def random_docs(rng: np.random.Generator, n_docs: int, *, sentences: tuple[int, int] = (1, 30),
                tokens: tuple[int, int] = (3, 25)) -> TokenizedDocuments:
    lens = [list(rng.integers(tokens[0], tokens[1] + 1, size=int(rng.integers(sentences[0], sentences[1] + 1))))
            for _ in range(n_docs)]
    return synthetic_docs(lens)


def bucket_windows(docs: TokenizedDocuments, *, num_buckets: int = 1, seed: int = 0, max_seq_length: int = 128,
                   window_tokens: int = 1 << 40) -> dict[int, list]:
    """Route ``docs`` (and the segments they donate) the way the pipeline does, then cut each
    bucket into windows of at most about ``window_tokens``: ``{bucket: [Window, ...]}``."""
    import pyarrow as pa

    from mlm_data.instances.donors import DonationConfig
    from mlm_data.instances.windows import (
        assemble_window,
        plan_windows,
        row_keys_and_tokens,
        select_rows,
    )
    from mlm_data.stages.prepare_documents import assign_buckets

    routed = assign_buckets(docs, num_buckets=num_buckets, validation_buckets=0, validation_fraction=0.0,
                            id_type=pa.uint32(), donations=DonationConfig(seed, max_seq_length))
    out = {}
    for (_, bucket), payload in sorted(routed.items()):
        keys, tokens = row_keys_and_tokens(payload, seed=seed)
        plan = plan_windows(keys, tokens, max_tokens=window_tokens)
        out[bucket] = [assemble_window([p for p in [select_rows(payload, plan, w, seed=seed)] if p is not None],
                                       seed=seed, deduplicate=True) for w in range(plan.num_windows)]
    return out


def one_window(docs: TokenizedDocuments, *, seed: int = 0, max_seq_length: int = 128):
    """All of ``docs`` in one window, with the segments they donate as random-next partners."""
    return bucket_windows(docs, seed=seed, max_seq_length=max_seq_length)[0][0]
