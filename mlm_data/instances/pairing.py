"""BERT sentence-pair instances for next-sentence prediction.

This follows the semantics users know from Google's ``create_pretraining_data.py``:
a target length (``max_seq_length - 3``, or with ``short_seq_prob`` a random shorter one);
segment A from one or more contiguous sentences; segment B the true continuation, or with
``random_next_prob`` (and always when the chunk is a single sentence) a span from a *different*
document, the unused sentences being put back; the longer segment truncated one token at a
time from a random end; rows ``[CLS] A [SEP] B [SEP]``.

Three deliberate differences:

- Random-next partners come from segments that documents of the whole corpus donated to this
  window (``donors``): a random document's random start sentence, as in Google's script, but
  the start is drawn when the segment is donated, and a long document donates several. B reads
  the segment's sentences from its start until it is long enough, as Google reads the random
  document's.
- The partner is drawn uniformly among the donated segments that do not come from the same
  document (Google retries ten times and can still pick the same document).
- Truncation is computed in closed form (the same final lengths, with the number of tokens cut
  from the front drawn as a binomial) instead of a per-token loop.

When a window holds no segment from another document, a chunk that needs a random partner
cannot have one: a one-sentence chunk is then dropped and counted (``NspInstances.dropped_*``,
reported in the manifest as ``chunks_dropped.no_pair_partner``), a longer one is paired with
its true continuation. Everything works on token *ranges* of the window's flat arrays; tokens
are only copied once, in ``rows.assemble``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlm_data.instances.rows import Pieces, fixed_pieces
from mlm_data.seeding import KeyedRandom, derive_key
from mlm_data.text.tokenized import TokenizedDocuments


@dataclass(frozen=True)
class NspInstances:
    """Pair instances as token ranges into the bucket's flat arrays."""

    a_start: np.ndarray    # (R,) int64
    a_end: np.ndarray
    b_start: np.ndarray
    b_end: np.ndarray
    is_random_next: np.ndarray  # (R,) bool
    truncated: np.ndarray       # (R,) bool: the pair lost tokens to truncation
    doc_index: np.ndarray       # (R,) int64: the document segment A comes from
    dropped_chunks: int = 0     # one-sentence chunks without a random-next partner
    dropped_tokens: int = 0     # their tokens

    @property
    def num_rows(self) -> int:
        return len(self.a_start)

    def pieces(self, *, cls_id: int, sep_id: int) -> Pieces:
        """``[CLS] A [SEP] B [SEP]`` for every row."""
        r = self.num_rows
        one = np.ones(r, dtype=np.int64)
        zero = np.zeros(r, dtype=np.int64)
        neg = -one
        start = np.stack([zero, self.a_start, zero, self.b_start, zero], axis=1)
        length = np.stack([one, self.a_end - self.a_start, one, self.b_end - self.b_start, one], axis=1)
        const = np.stack([one * cls_id, neg, one * sep_id, neg, one * sep_id], axis=1)
        return fixed_pieces(start, length, const)

    def segment_b_start(self) -> np.ndarray:
        return (self.a_end - self.a_start) + 2


def truncate_lengths(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Tokens to remove from A and from B so that the pair fits ``max_tokens``.

    Same result as repeatedly trimming the longer segment (B on ties):

    >>> truncate_lengths(10, 3, 9), truncate_lengths(5, 5, 7), truncate_lengths(4, 9, 10)
    ((4, 0), (1, 2), (0, 3))
    """
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return 0, 0
    gap = abs(len_a - len_b)
    if gap >= excess:
        return (excess, 0) if len_a > len_b else (0, excess)
    rest = excess - gap
    from_b, from_a = (rest + 1) // 2, rest // 2
    if len_a > len_b:
        return gap + from_a, from_b
    return from_a, gap + from_b


def _own_segments(docs: TokenizedDocuments, num_sources: int) -> dict[bytes, list[int]]:
    """For each source document that also donated segments to this window, the positions of
    those segments among the partners (they must never be its partner)."""
    sources = {docs.digests[d].tobytes() for d in range(num_sources)}
    own: dict[bytes, list[int]] = {}
    for k in range(docs.num_docs - num_sources):
        digest = docs.digests[num_sources + k].tobytes()
        if digest in sources:
            own.setdefault(digest, []).append(k)
    return own


def create_nsp_instances(
    docs: TokenizedDocuments,
    *,
    num_sources: int,
    max_seq_length: int,
    short_seq_prob: float,
    random_next_prob: float,
    seed: int,
    dupe: int = 0,
) -> NspInstances:
    """Pair instances for the first ``num_sources`` documents of ``docs``; the documents after
    them are donated segments, the random-next partners.

    Draws come from ``KeyedRandom(seed, "pairs", dupe, doc_id)``, so a document's instances
    depend only on its own id and on the partners at hand, never on processing order.
    """
    max_tokens = max_seq_length - 3
    num_partners = docs.num_docs - num_sources
    own = _own_segments(docs, num_sources)
    sent_offsets = docs.sent_offsets.tolist()
    doc_offsets = docs.doc_offsets.tolist()
    out_a0: list[int] = []
    out_a1: list[int] = []
    out_b0: list[int] = []
    out_b1: list[int] = []
    out_rand: list[bool] = []
    out_trunc: list[bool] = []
    out_doc: list[int] = []
    dropped_chunks = dropped_tokens = 0

    for d in range(num_sources):
        rng = KeyedRandom(derive_key(seed, "pairs", dupe, docs.doc_ids[d]))
        excluded = own.get(docs.digests[d].tobytes(), [])
        choices = num_partners - len(excluded)
        s_lo, s_hi = doc_offsets[d], doc_offsets[d + 1]
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        chunk_start = s_lo  # first sentence of the current chunk
        chunk_len = 0
        i = s_lo
        while i < s_hi:
            chunk_len += sent_offsets[i + 1] - sent_offsets[i]
            if i == s_hi - 1 or chunk_len >= target:
                n_chunk = i + 1 - chunk_start
                a_sents = rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1
                a0 = sent_offsets[chunk_start]
                a1 = sent_offsets[chunk_start + a_sents]
                random_next = n_chunk == 1 or rng.random() < random_next_prob
                if random_next and choices == 0:
                    random_next = False
                    if n_chunk == 1:  # no true continuation either: the chunk cannot make a row
                        dropped_chunks += 1
                        dropped_tokens += a1 - a0
                        chunk_start, chunk_len = i + 1, 0
                        i += 1
                        continue
                if random_next:
                    target_b = target - (a1 - a0)
                    partner = rng.randint(0, choices - 1)
                    for k in excluded:  # skip the document's own segments (sorted)
                        if partner >= k:
                            partner += 1
                    j, o_hi = doc_offsets[num_sources + partner], doc_offsets[num_sources + partner + 1]
                    b0 = sent_offsets[j]
                    b1 = b0
                    while j < o_hi:
                        b1 = sent_offsets[j + 1]
                        j += 1
                        if b1 - b0 >= target_b:
                            break
                    # Sentences of the chunk not used for A go back for the next instance.
                    i -= n_chunk - a_sents
                else:
                    b0, b1 = a1, sent_offsets[i + 1]
                cut_a, cut_b = truncate_lengths(a1 - a0, b1 - b0, max_tokens)
                if cut_a:
                    front = rng.binomial_half(cut_a)
                    a0, a1 = a0 + front, a1 - (cut_a - front)
                if cut_b:
                    front = rng.binomial_half(cut_b)
                    b0, b1 = b0 + front, b1 - (cut_b - front)
                out_a0.append(a0)
                out_a1.append(a1)
                out_b0.append(b0)
                out_b1.append(b1)
                out_rand.append(random_next)
                out_trunc.append(bool(cut_a or cut_b))
                out_doc.append(d)
                chunk_start = i + 1
                chunk_len = 0
            i += 1

    return NspInstances(
        a_start=np.asarray(out_a0, dtype=np.int64),
        a_end=np.asarray(out_a1, dtype=np.int64),
        b_start=np.asarray(out_b0, dtype=np.int64),
        b_end=np.asarray(out_b1, dtype=np.int64),
        is_random_next=np.asarray(out_rand, dtype=bool),
        truncated=np.asarray(out_trunc, dtype=bool),
        doc_index=np.asarray(out_doc, dtype=np.int64),
        dropped_chunks=dropped_chunks,
        dropped_tokens=dropped_tokens,
    )
