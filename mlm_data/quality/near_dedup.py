"""Near-duplicate removal, the per-batch halves around the Beam shuffles.

``MinHasher.sign`` turns a batch of documents into MinHash signatures and LSH band keys
(``minhash``); the band buckets, their verification and the connected components are
``clusters``' job; ``apply_drops`` finally removes the decided documents from their batch and
counts them. Documents are signed as ``CleanAndSplit`` will see them (``cleaned_text``):
those that cleaning drops are left alone for it to count, and documents without a single word
are never near-duplicates of anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlm_data import accounting
from mlm_data.accounting import Counts
from mlm_data.config.preprocess import CleanConfig, DedupConfig
from mlm_data.quality.clusters import Node
from mlm_data.quality.documents import cleaned_text
from mlm_data.quality.minhash import MinHash, band_keys, doc_digest, lsh_params
from mlm_data.quality.words import batch_words, ngrams
from mlm_data.ragged import ranges_index
from mlm_data.reading.document_reader import Document


def batch_key(docs: Sequence[Document]) -> str:
    """A batch's name in the join that applies the decisions: its first document id (ids are
    unique); empty batches have nothing to decide and share the name ""."""
    return docs[0].id if docs else ""


@dataclass(frozen=True)
class Signed:
    nodes: list[Node]
    sketches: np.ndarray              # (n, num_perm) uint32, undensified: what verification compares
    sets: list[np.ndarray | None]     # sorted distinct shingle hashes of documents with at most num_perm
    keys: np.ndarray                  # (n, bands) uint64, cut from the densified signatures

    def records(self) -> list[bytes]:
        """What verification needs of each document (``parse_record`` reads it back)."""
        return [sketch.tobytes() + (b"" if exact is None else exact.tobytes())
                for sketch, exact in zip(self.sketches, self.sets)]


def parse_record(record: bytes | memoryview, num_perm: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A document's sketch and, if it has few enough shingles, its exact shingle set."""
    sketch = np.frombuffer(record, dtype=np.uint32, count=num_perm)
    rest = np.frombuffer(record, dtype=np.uint64, offset=4 * num_perm)
    return sketch, (rest if len(rest) else None)


def _shingle_sets(hashes: np.ndarray, offsets: np.ndarray, limit: int) -> list[np.ndarray | None]:
    """Each document's distinct shingle hashes, sorted, if it has at most ``limit`` shingles (else None)."""
    counts = np.diff(offsets)
    small = np.flatnonzero((counts > 0) & (counts <= limit))
    out: list[np.ndarray | None] = [None] * len(counts)
    if len(small) == 0:
        return out
    values = hashes[ranges_index(offsets[:-1][small], counts[small])]
    owner = np.repeat(np.arange(len(small)), counts[small])
    order = np.lexsort((values, owner))
    values, owner = values[order], owner[order]
    first = np.ones(len(values), dtype=bool)
    first[1:] = (values[1:] != values[:-1]) | (owner[1:] != owner[:-1])
    values, owner = values[first], owner[first]
    bounds = np.searchsorted(owner, np.arange(len(small) + 1))
    for j, d in enumerate(small.tolist()):
        out[d] = values[bounds[j]:bounds[j + 1]]
    return out


class MinHasher:
    """Sketches, shingle sets and band keys for one ``DedupConfig`` and seed (identical on every worker).

    Verification compares two documents' sketches (``minhash.estimated_jaccard``), except
    when both have at most ``num_perm`` shingles: then their exact shingle sets, at most
    1 KB each. Sketches of so few shingles are coarse (a shingle pair sharing a bin moves the
    estimate by a whole step: two 9-word pages with Jaccard 0.67 read 0.8 about once in 50
    seeds), and templated short pages are exactly where a corpus has many such pairs, which
    connected components would chain into one cluster.
    """

    def __init__(self, cfg: DedupConfig, seed: int) -> None:
        self.threshold = cfg.jaccard_threshold
        self.ngram = cfg.ngram
        self.bands, self.rows = (cfg.bands, cfg.rows) if cfg.bands else lsh_params(cfg.jaccard_threshold, cfg.num_perm)
        self.minhash = MinHash(seed, cfg.num_perm)

    def sign(self, docs: Sequence[Document], clean: CleanConfig, *, already_clean: bool = False) -> Signed:
        key = batch_key(docs)
        nodes: list[Node] = []
        texts: list[str] = []
        for doc in docs:
            text = cleaned_text(doc.text, clean, already_clean=already_clean)
            if text is not None:
                nodes.append((doc.id, key, doc_digest(text)))
                texts.append(text)
        grams = ngrams(batch_words(texts), self.ngram, whole_short_documents=True)
        has_words = np.diff(grams.offsets) > 0
        sketches = self.minhash.sketches(grams.hashes, grams.offsets)[has_words]
        sets = [s for s, keep in zip(_shingle_sets(grams.hashes, grams.offsets, self.minhash.num_perm),
                                     has_words.tolist()) if keep]
        nodes = [n for n, keep in zip(nodes, has_words.tolist()) if keep]
        return Signed(nodes, sketches, sets, band_keys(self.minhash.densified(sketches), self.bands, self.rows))


def drop_reason(node: Node, kept: Node) -> str:
    """``duplicate`` when the text is identical to the kept one (as exact de-duplication would
    say), ``near_duplicate`` otherwise."""
    return accounting.DUPLICATE if node[2] == kept[2] else accounting.NEAR_DUPLICATE


def apply_drops(docs: Sequence[Document], drops: Mapping[str, str]) -> tuple[list[Document], Counts]:
    """``docs`` without the ids in ``drops`` (id → reason), and the drops counted."""
    counts = Counts()
    kept = []
    for doc in docs:
        reason = drops.get(doc.id)
        if reason is None:
            kept.append(doc)
        else:
            counts.drop(reason)
    return kept, counts
