"""The unit of work of the pipeline's first stages: a batch of items and the tallies that made it.

``read_batches`` reads one input file into batches of about ``BATCH_CHARS`` of text (documents
for text corpora, labelled records for the classification tasks), counting every record
slot: each becomes an item or a drop, and whole-file problems ride along for the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlm_data.accounting import Counts
from mlm_data.config.preprocess import InputConfig
from mlm_data.dataset.schema import LABELLED_TASKS
from mlm_data.reading.document_reader import Document, read_documents
from mlm_data.reading.input_files import InputFile
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence, read_labelled
from mlm_data.reading.records import Dropped, FileProblem

#: Items are handed on in batches of about this much text: big enough that per-element
#: runner overhead vanishes even for one-line documents, small enough to bound memory.
BATCH_CHARS = 1 << 20


@dataclass
class Batch:
    """One unit of work in the first stages: its items and the tallies of the stage that made it.

    Tallies ride along with the data instead of going to tagged side outputs, which some
    runners (Beam's DaskRunner) mix into the main output. Each stage's tallies are collected
    from that stage's own output, so if a runner ever lost batches between stages, documents
    read would no longer equal written + dropped and the manifest step would refuse to publish.
    """

    items: Any
    counts: Counts = field(default_factory=Counts)
    problems: list[FileProblem] = field(default_factory=list)
    facts: dict[str, int] = field(default_factory=dict)
    """Tallies that are not about documents (e.g. words cut to fit a window), for the manifest."""
    chars_read: int = 0
    """Characters of text read into this batch (set by ``read_batches``; for progress only)."""
    cleaned: bool = False
    """Every document's text is already as cleaning leaves it (``mlm_data.quality.documents``):
    set by the quality stages, which clean each document once, so ``CleanAndSplit`` does not."""

    def summary(self) -> tuple[Counts, list[FileProblem], dict[str, int]]:
        return self.counts, self.problems, self.facts


def _size(item: Document | TaggedSentence | LabelledText) -> int:
    if isinstance(item, Document):
        return len(item.text)
    if isinstance(item, TaggedSentence):
        return sum(map(len, item.words)) + len(item.words)
    return len(item.text) + len(item.text_pair or "")


def read_batches(file: InputFile, config: InputConfig, *, task: str, max_document_chars: int) -> Iterator[Batch]:
    """``file`` as batches of documents (or of labelled records for labelled tasks); the last
    batch of a file carries its file problems and may hold no items."""
    batch = Batch(items=[])
    chars = 0
    if task in LABELLED_TASKS:
        items = read_labelled(file, config, task=task, max_document_chars=max_document_chars)
    else:
        items = read_documents(file, config, max_document_chars=max_document_chars)
    for item in items:
        if isinstance(item, (Document, TaggedSentence, LabelledText)):
            batch.counts.read += 1
            batch.items.append(item)
            chars += _size(item)
            if chars >= BATCH_CHARS:
                batch.chars_read = chars
                yield batch
                batch, chars = Batch(items=[]), 0
        elif isinstance(item, Dropped):
            batch.counts.read += 1
            batch.counts.drop(item.reason)
        else:
            batch.problems.append(item)
    batch.chars_read = chars
    yield batch
