"""Assemble training rows from pieces, vectorised.

Pair creation and packing decide *which* tokens form each row as a short list of pieces:
either a range of the bucket's flat token array or one constant token (``[CLS]``, ``[SEP]``,
end-of-document). ``assemble`` turns all pieces of all rows into flat value arrays and row
offsets in a handful of numpy operations, with no per-token Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlm_data.ragged import offsets_from_lengths, ranges_index


@dataclass(frozen=True)
class Pieces:
    """Rows as pieces: row ``r`` is pieces ``row_offsets[r]:row_offsets[r+1]``, in order.

    A piece with ``const >= 0`` is that single token (``length`` must be 1); otherwise it
    copies ``length`` tokens starting at ``start`` in the source arrays.
    """

    start: np.ndarray        # (P,) int64
    length: np.ndarray       # (P,) int64
    const: np.ndarray        # (P,) int64, -1 for a source range
    row_offsets: np.ndarray  # (R+1,) int64

    @property
    def num_rows(self) -> int:
        return len(self.row_offsets) - 1

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        """The rows of every part, in order."""
        if not parts:
            z = np.zeros(0, np.int64)
            return cls(z, z, z, np.zeros(1, np.int64))
        shifts = np.cumsum([0] + [len(p.start) for p in parts[:-1]])
        return cls(
            start=np.concatenate([p.start for p in parts]),
            length=np.concatenate([p.length for p in parts]),
            const=np.concatenate([p.const for p in parts]),
            row_offsets=np.concatenate([[0]] + [p.row_offsets[1:] + s for p, s in zip(parts, shifts)]).astype(np.int64),
        )

    def take(self, rows: np.ndarray) -> Pieces:
        """The rows at ``rows``, in that order (no token is copied, only piece descriptions)."""
        counts = np.diff(self.row_offsets)[rows]
        idx = ranges_index(self.row_offsets[:-1][rows], counts)
        return Pieces(start=self.start[idx], length=self.length[idx], const=self.const[idx],
                      row_offsets=offsets_from_lengths(counts))

    def row_lengths(self) -> np.ndarray:
        """Tokens per row."""
        cum = np.concatenate([[0], np.cumsum(self.length)])
        return cum[self.row_offsets[1:]] - cum[self.row_offsets[:-1]]


def fixed_pieces(start: np.ndarray, length: np.ndarray, const: np.ndarray) -> Pieces:
    """Pieces for rows that all have the same number K of pieces, given as (R, K) arrays."""
    r, k = start.shape
    return Pieces(
        start=start.reshape(-1).astype(np.int64),
        length=length.reshape(-1).astype(np.int64),
        const=const.reshape(-1).astype(np.int64),
        row_offsets=np.arange(0, r * k + 1, k, dtype=np.int64),
    )


def gather_index(pieces: Pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output token: source index (or 0 for constants), the constant (or -1), and row offsets.

    >>> p = fixed_pieces(np.array([[0, 5, 0]]), np.array([[1, 2, 1]]), np.array([[9, -1, 8]]))
    >>> src, const, offs = gather_index(p)
    >>> src.tolist(), const.tolist(), offs.tolist()
    ([0, 5, 6, 0], [9, -1, -1, 8], [0, 4])
    """
    length = pieces.length
    total = int(length.sum())
    piece_of = np.repeat(np.arange(len(length), dtype=np.int64), length)
    begin = np.cumsum(length) - length
    pos = np.arange(total, dtype=np.int64) - begin[piece_of]
    const = pieces.const[piece_of]
    src = np.where(const >= 0, 0, pieces.start[piece_of] + pos)
    cum = np.concatenate([[0], np.cumsum(length)])
    row_offsets = cum[pieces.row_offsets]
    return src, const, row_offsets


def assemble(pieces: Pieces, ids: np.ndarray, word_start: np.ndarray, *,
             chunk_tokens: int = 1 << 18) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids and word-start flags of every row, plus row offsets.

    Works through the rows in chunks of about ``chunk_tokens`` output tokens, so the index
    arithmetic (several int64 values per token) never exists for a whole bucket at once;
    constants (special tokens) count as word starts.
    """
    row_len = pieces.row_lengths()
    offsets = offsets_from_lengths(row_len)
    out_ids = np.empty(int(offsets[-1]), dtype=ids.dtype)
    out_ws = np.empty(int(offsets[-1]), dtype=bool)
    r = 0
    while r < pieces.num_rows:
        end = int(np.searchsorted(offsets, offsets[r] + chunk_tokens, side="right")) - 1
        end = min(max(end, r + 1), pieces.num_rows)
        p0, p1 = pieces.row_offsets[r], pieces.row_offsets[end]
        part = Pieces(start=pieces.start[p0:p1], length=pieces.length[p0:p1], const=pieces.const[p0:p1],
                      row_offsets=pieces.row_offsets[r:end + 1] - p0)
        src, const, _ = gather_index(part)
        span = slice(offsets[r], offsets[end])
        out_ids[span] = take(ids, src, const)
        out_ws[span] = take(word_start, src, const, const_value=True)
        r = end
    return out_ids, out_ws, offsets


def take(source: np.ndarray, src: np.ndarray, const: np.ndarray, *, const_value: object | None = None) -> np.ndarray:
    """Values for every output token: ``source[src]``, or the piece constant (or ``const_value``)."""
    out = source[src]
    is_const = const >= 0
    if const_value is None:
        out[is_const] = const[is_const].astype(out.dtype)
    else:
        out[is_const] = const_value
    return out
