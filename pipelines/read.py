"""ReadDocuments: input files to batches of documents, with every document slot counted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from mlm_data.accounting import Counts
from mlm_data.config.preprocess import InputConfig
from mlm_data.dataset.schema import LABELLED_TASKS
from mlm_data.reading.document_reader import (
    Document,
    Dropped,
    FileProblem,
    InputFile,
    read_documents,
)
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence, read_labelled
from pipelines.counters import report

#: Documents are handed on in batches of about this much text: big enough that per-element
#: runner overhead vanishes even for one-line documents, small enough to bound memory.
BATCH_CHARS = 1 << 20


@dataclass
class Batch:
    """One unit of work in the first stage: its items and the tallies of the stage that made it.

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

    def summary(self) -> tuple[Counts, list[FileProblem], dict[str, int]]:
        return self.counts, self.problems, self.facts


def _size(item: Document | TaggedSentence | LabelledText) -> int:
    if isinstance(item, Document):
        return len(item.text)
    if isinstance(item, TaggedSentence):
        return sum(map(len, item.words)) + len(item.words)
    return len(item.text) + len(item.text_pair or "")


class ReadFileFn(beam.DoFn):
    """Reads one file: text corpora as documents, labelled tasks as labelled records."""

    def __init__(self, config: InputConfig, max_document_chars: int, task: str) -> None:
        self._config = config
        self._max_chars = max_document_chars
        self._task = task

    def process(self, file: InputFile) -> Iterator[Batch]:
        batch = Batch(items=[])
        chars = 0
        if self._task in LABELLED_TASKS:
            items = read_labelled(file, self._config, task=self._task, max_document_chars=self._max_chars)
        else:
            items = read_documents(file, self._config, max_document_chars=self._max_chars)
        for item in items:
            if isinstance(item, (Document, TaggedSentence, LabelledText)):
                batch.counts.read += 1
                batch.items.append(item)
                chars += _size(item)
                if chars >= BATCH_CHARS:
                    report(batch.counts)
                    yield batch
                    batch, chars = Batch(items=[]), 0
            elif isinstance(item, Dropped):
                batch.counts.read += 1
                batch.counts.drop(item.reason)
            elif isinstance(item, FileProblem):
                batch.problems.append(item)
        report(batch.counts)
        yield batch


class ReadDocuments(beam.PTransform):
    """Files → ``Batch`` of ``list[Document]`` (or of labelled records for labelled tasks)."""

    def __init__(self, files: Sequence[InputFile], config: InputConfig, max_document_chars: int,
                 task: str) -> None:
        super().__init__()
        self._files = list(files)
        self._config = config
        self._max_chars = max_document_chars
        self._task = task

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadFileFn(self._config, self._max_chars, self._task))
        )
