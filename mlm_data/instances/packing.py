"""Pack token streams into rows: RoBERTa FULL-SENTENCES / DOC-SENTENCES and causal-LM blocks.

FULL-SENTENCES fills each row with whole sentences read contiguously through the bucket's
documents, crossing document boundaries with an extra separator; DOC-SENTENCES does the same
but starts a new row at every document. A sentence longer than a row is cut into row-sized
pieces rather than dropped, so every token is kept. Causal-LM blocks cut the stream
``doc EOS doc EOS ...`` into fixed-length blocks; only the bucket's last block is short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlm_data.instances.rows import Pieces
from mlm_data.text.tokenized import TokenizedDocuments


def pack_sentences(
    docs: TokenizedDocuments, *, max_seq_length: int, cls_id: int, sep_id: int, cross_documents: bool
) -> Pieces:
    """Rows ``[CLS] sentences... [SEP]`` (with ``[SEP]`` between documents inside a row)."""
    capacity = max_seq_length - 2
    sent = docs.sent_offsets.tolist()
    doc_off = docs.doc_offsets.tolist()
    start: list[int] = []
    length: list[int] = []
    const: list[int] = []
    row_offsets: list[int] = [0]
    used = 0           # content tokens in the open row (separators included)
    open_doc = -1      # document of the last range in the open row
    range_open = False  # whether the last piece is a range that the next sentence may extend

    def close_row() -> None:
        nonlocal used, open_doc, range_open
        if used:
            start.append(0), length.append(1), const.append(sep_id)
            row_offsets.append(len(start))
        used, open_doc, range_open = 0, -1, False

    def open_row() -> None:
        start.append(0), length.append(1), const.append(cls_id)

    for d in range(docs.num_docs):
        if not cross_documents:
            close_row()
        for s in range(doc_off[d], doc_off[d + 1]):
            lo, n = sent[s], sent[s + 1] - sent[s]
            if n == 0:
                continue
            sep_needed = 1 if used and open_doc != d else 0
            if used and used + sep_needed + n > capacity:
                close_row()
                sep_needed = 0
            while n > 0:
                if not used:
                    open_row()
                if sep_needed:
                    start.append(0), length.append(1), const.append(sep_id)
                    used += 1
                    range_open = False
                take = min(n, capacity - used)
                if range_open and open_doc == d and start[-1] + length[-1] == lo:
                    length[-1] += take
                else:
                    start.append(lo), length.append(take), const.append(-1)
                used += take
                open_doc, range_open = d, True
                lo, n = lo + take, n - take
                sep_needed = 0
                if n > 0:
                    close_row()
    close_row()
    return Pieces(
        start=np.asarray(start, dtype=np.int64),
        length=np.asarray(length, dtype=np.int64),
        const=np.asarray(const, dtype=np.int64),
        row_offsets=np.asarray(row_offsets, dtype=np.int64),
    )


@dataclass(frozen=True)
class CausalBlocks:
    """Fixed-length blocks over ``doc EOS doc EOS ...``; values are flat, rows by offsets."""

    ids: np.ndarray              # (N + D,) same dtype as the documents' ids
    row_offsets: np.ndarray      # (R+1,)
    doc_start_values: np.ndarray  # (K,) uint16 position inside its block of each document start
    doc_start_offsets: np.ndarray  # (R+1,) rows' ranges into doc_start_values


def pack_causal(docs: TokenizedDocuments, *, block_size: int, eos_id: int) -> CausalBlocks:
    """Concatenate documents with an end-of-document token and cut into ``block_size`` blocks."""
    n_docs = docs.num_docs
    tok_off = docs.doc_token_offsets()
    doc_len = np.diff(tok_off)
    total = int(doc_len.sum()) + n_docs
    stream = np.empty(total, dtype=docs.ids.dtype)
    # Document d starts at tok_off[d] + d in the stream; its EOS sits right after its tokens.
    starts = tok_off[:-1] + np.arange(n_docs)
    eos_pos = starts + doc_len
    is_eos = np.zeros(total, dtype=bool)
    is_eos[eos_pos] = True
    stream[~is_eos] = docs.ids
    stream[is_eos] = eos_id
    row_offsets = np.append(np.arange(0, total, block_size, dtype=np.int64), total) if total else np.zeros(1, np.int64)
    block_of_start = starts // block_size
    doc_start_offsets = np.searchsorted(block_of_start, np.arange(len(row_offsets)), side="left").astype(np.int64)
    return CausalBlocks(
        ids=stream,
        row_offsets=row_offsets,
        doc_start_values=(starts % block_size).astype(np.uint16),
        doc_start_offsets=doc_start_offsets,
    )
