"""Synthetic tokenized documents whose token ids say where they came from."""

from __future__ import annotations

import hashlib

import numpy as np

from mlm_data.instances.rows import offsets_from_lengths
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
