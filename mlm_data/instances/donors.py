"""Random-next partners from the whole corpus: documents donate segments to random buckets.

Google's ``create_pretraining_data.py`` holds the whole corpus in memory and takes the B segment
of a random-next pair from a random document anywhere in it: a random start sentence, then the
following sentences until B is long enough. Here a corpus is spread over buckets and a bucket
over windows, so partners drawn inside a bucket would come from a share of the corpus that
shrinks as the bucket count grows. Instead, while documents are routed to their buckets, every
document also *donates* segments: a start sentence drawn at random and the whole sentences
after it, up to ``max_seq_length - 3`` tokens (the longest B a row can hold), each sent to a
bucket of its split drawn at random. A bucket draws its random-next partners from the segments
it received (``pairing.create_nsp_instances``), so a partner comes from any bucket with equal
chance, whatever the number of buckets.

A document donates one segment per started ``DONOR_EVERY_ROWS × max_seq_length`` tokens: short
documents one (a partner's source is a uniform document, as in Google's script), long ones in
proportion to their length, so a book-length document that yields hundreds of rows does not
hand all its random-next partners the same few segments. Each segment is then used by a few
rows at most on average, where Google draws a new start sentence for every row.

Draws are keyed by ``(seed, purpose, document digest, segment index)``: identical documents
donate identical segments to the same buckets, and nothing depends on arrival order. A segment
whose sentence runs past the cap is cut there; Google would keep the whole sentence and then
truncate the pair, which differs only for sentences longer than a row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlm_data.ragged import offsets_from_lengths, ranges_index, take_ranges
from mlm_data.seeding import derive_key, random_bits, uniform
from mlm_data.text.tokenized import TokenizedDocuments

#: A document donates one segment per started ``DONOR_EVERY_ROWS * max_seq_length`` tokens.
DONOR_EVERY_ROWS = 8


@dataclass(frozen=True)
class DonationConfig:
    """What donating needs from the configuration (BERT pairs only)."""

    seed: int
    max_seq_length: int


@dataclass(frozen=True)
class Donations:
    """Donated segments as documents of their own (one sentence list each). ``segments.doc_ids``
    and ``segments.digests`` are those of the source documents."""

    segments: TokenizedDocuments
    source: np.ndarray  # (K,) int64: the donating document's index
    index: np.ndarray   # (K,) int32: 0, 1, ... among that document's donations


def first8(digests: np.ndarray) -> np.ndarray:
    """Bytes 0-7 of each 16-byte digest as little-endian uint64."""
    return np.ascontiguousarray(np.asarray(digests, dtype=np.uint8)[:, :8]).view("<u8").ravel()


def donate(docs: TokenizedDocuments, config: DonationConfig) -> Donations:
    """The segments ``docs`` donate (see the module docstring), vectorised over documents."""
    seed, max_seq_length = config.seed, config.max_seq_length
    cap = max_seq_length - 3
    doc_tokens = docs.doc_num_tokens()
    per_doc = np.where(doc_tokens > 0, -(-doc_tokens // (DONOR_EVERY_ROWS * max_seq_length)), 0)
    source = np.repeat(np.arange(docs.num_docs, dtype=np.int64), per_doc)
    index = (np.arange(len(source), dtype=np.int64) - np.repeat(offsets_from_lengths(per_doc)[:-1], per_doc))
    sent_lo, sent_hi = docs.doc_offsets[:-1][source], docs.doc_offsets[1:][source]
    # The start sentence: uniform over the document's sentences, as Google's random_start.
    u = uniform(derive_key(seed, "donor-start"), first8(docs.digests[source]), index.astype(np.uint64))
    start = sent_lo + np.minimum((u * (sent_hi - sent_lo)).astype(np.int64), sent_hi - sent_lo - 1)
    so = docs.sent_offsets
    # Whole sentences from the start until the segment holds ``cap`` tokens or the document ends.
    end = np.minimum(np.searchsorted(so, so[start] + cap, side="left"), sent_hi)  # exclusive sentence end
    end = np.maximum(end, start + 1)
    tok_start = so[start]
    tok_len = np.minimum(so[end] - tok_start, cap)
    n_sents = end - start
    sent_len = np.diff(so)[ranges_index(start, n_sents)]
    last = np.cumsum(n_sents) - 1
    sent_len[last] -= (so[end] - tok_start) - tok_len  # cut the sentence that runs past the cap
    segments = TokenizedDocuments(
        doc_ids=tuple(docs.doc_ids[i] for i in source.tolist()),
        digests=docs.digests[source],
        doc_offsets=offsets_from_lengths(n_sents),
        sent_offsets=offsets_from_lengths(sent_len),
        ids=take_ranges(docs.ids, tok_start, tok_len),
        word_start=take_ranges(docs.word_start, tok_start, tok_len),
    )
    return Donations(segments=segments, source=source, index=index.astype(np.int32))


def donor_buckets(digests: np.ndarray, index: np.ndarray, *, seed: int, num_buckets: int) -> np.ndarray:
    """The bucket each donated segment goes to: uniform over ``num_buckets``, keyed by the
    source document's digest and the segment's index."""
    bits = random_bits(derive_key(seed, "donor-bucket"), first8(digests), np.asarray(index, dtype=np.uint64))
    return (bits % np.uint64(max(1, num_buckets))).astype(np.int64)
