"""Tokenized documents in columnar form: the unit that travels between pipeline stages.

A bucket holds thousands of documents; keeping them as a few flat numpy arrays (tokens, word
starts, sentence offsets, document offsets) makes pairing and packing index arithmetic instead
of list juggling, and converts to and from one Arrow record batch without copying per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mlm_data.ragged import offsets_from_lengths, ranges_index, take_ranges

DIGEST_BYTES = 16


@dataclass(frozen=True)
class TokenizedDocuments:
    """Documents ``d``: sentences ``doc_offsets[d]:doc_offsets[d+1]``; sentence ``s``: tokens
    ``sent_offsets[s]:sent_offsets[s+1]`` of ``ids`` / ``word_start``."""

    doc_ids: tuple[str, ...]
    digests: np.ndarray      # (D, 16) uint8: content hash of the cleaned text
    doc_offsets: np.ndarray  # (D+1,) int64 into sentences
    sent_offsets: np.ndarray  # (S+1,) int64 into tokens
    ids: np.ndarray          # (N,) unsigned ints (uint16 when the vocabulary fits)
    word_start: np.ndarray   # (N,) bool

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    def doc_token_offsets(self) -> np.ndarray:
        """(D+1,) token offsets of each document."""
        return self.sent_offsets[self.doc_offsets]

    def doc_num_tokens(self) -> np.ndarray:
        return np.diff(self.doc_token_offsets())

    def sentence_lengths(self) -> np.ndarray:
        return np.diff(self.sent_offsets)

    def select(self, order: Sequence[int] | np.ndarray) -> TokenizedDocuments:
        """The documents at ``order``, in that order (a subset, a permutation, or both)."""
        order = np.asarray(order, dtype=np.int64)
        doc_sents = np.diff(self.doc_offsets)
        sent_idx = ranges_index(self.doc_offsets[:-1][order], doc_sents[order])
        sent_len = self.sentence_lengths()[sent_idx]
        tok_offsets = self.doc_token_offsets()
        tok_starts, tok_lens = tok_offsets[:-1][order], np.diff(tok_offsets)[order]
        return TokenizedDocuments(
            doc_ids=tuple(self.doc_ids[i] for i in order),
            digests=self.digests[order],
            doc_offsets=offsets_from_lengths(doc_sents[order]),
            sent_offsets=offsets_from_lengths(sent_len),
            ids=take_ranges(self.ids, tok_starts, tok_lens),
            word_start=take_ranges(self.word_start, tok_starts, tok_lens),
        )

    def to_arrow(self, id_type: pa.DataType) -> pa.RecordBatch:
        """One record batch, one row per document (the shuffle payload)."""
        tok_offsets = self.doc_token_offsets()
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.doc_ids, type=pa.string()),
                pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(DIGEST_BYTES), self.num_docs,
                    [None, pa.py_buffer(np.ascontiguousarray(self.digests).tobytes())],
                ),
                pa.ListArray.from_arrays(
                    pa.array(self.doc_offsets.astype(np.int32)),
                    pa.array(self.sentence_lengths().astype(np.int32)),
                ),
                pa.ListArray.from_arrays(pa.array(tok_offsets.astype(np.int32)), pa.array(self.ids.astype(id_type.to_pandas_dtype()))),
                pa.ListArray.from_arrays(pa.array(tok_offsets.astype(np.int32)), pa.array(self.word_start)),
            ],
            names=["doc_id", "digest", "sentence_lengths", "ids", "word_start"],
        )

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch) -> TokenizedDocuments:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        table = table.combine_chunks()
        n = table.num_rows
        if n == 0:
            return cls.empty()
        digests = np.frombuffer(table.column("digest").chunk(0).buffers()[1], dtype=np.uint8,
                                count=n * DIGEST_BYTES, offset=table.column("digest").chunk(0).offset * DIGEST_BYTES)
        sl = table.column("sentence_lengths").chunk(0)
        ids = table.column("ids").chunk(0)
        ws = table.column("word_start").chunk(0)
        return cls(
            doc_ids=tuple(table.column("doc_id").to_pylist()),
            digests=digests.reshape(n, DIGEST_BYTES).copy(),
            doc_offsets=offsets_from_lengths(_list_lengths(sl)),
            sent_offsets=offsets_from_lengths(sl.flatten().to_numpy().astype(np.int64)),
            ids=ids.flatten().to_numpy(),
            word_start=ws.flatten().to_numpy(zero_copy_only=False).astype(bool),
        )

    @classmethod
    def empty(cls) -> TokenizedDocuments:
        z = np.zeros(1, dtype=np.int64)
        return cls((), np.zeros((0, DIGEST_BYTES), np.uint8), z, z.copy(), np.zeros(0, np.uint32), np.zeros(0, bool))


def _list_lengths(arr: pa.ListArray) -> np.ndarray:
    offs = arr.offsets.to_numpy()
    return np.diff(offs).astype(np.int64)
