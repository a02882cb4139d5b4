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
from mlm_data.reading.document_reader import Document


def batch_key(docs: Sequence[Document]) -> str:
    """A batch's name in the join that applies the decisions: its first document id (ids are
    unique); empty batches have nothing to decide and share the name ""."""
    return docs[0].id if docs else ""


@dataclass(frozen=True)
class Signed:
    nodes: list[Node]
    sigs: np.ndarray   # (n, num_perm) uint32
    keys: np.ndarray   # (n, bands) uint64


class MinHasher:
    """Signatures and band keys for one ``DedupConfig`` and seed (identical on every worker)."""

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
        sigs = self.minhash.signatures(grams.hashes, grams.offsets)[has_words]
        nodes = [n for n, keep in zip(nodes, has_words.tolist()) if keep]
        return Signed(nodes, sigs, band_keys(sigs, self.bands, self.rows))


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
