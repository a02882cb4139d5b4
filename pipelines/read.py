"""ReadDocuments: input files to batches of documents, with every document slot counted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam

from mlm_data.accounting import Counts
from mlm_data.config import InputConfig
from mlm_data.readers import Document, Dropped, FileProblem, InputFile, read_documents
from pipelines.metrics import report

COUNTS = "counts"
PROBLEMS = "problems"
#: Documents are handed on in batches of about this much text: big enough that per-element
#: runner overhead vanishes even for one-line documents, small enough to bound memory.
BATCH_CHARS = 1 << 20


class ReadFileFn(beam.DoFn):
    def __init__(self, config: InputConfig, max_document_chars: int) -> None:
        self._config = config
        self._max_chars = max_document_chars

    def process(self, file: InputFile) -> Iterator[object]:
        batch: list[Document] = []
        chars = 0
        counts = Counts()
        for item in read_documents(file, self._config, max_document_chars=self._max_chars):
            if isinstance(item, Document):
                counts.read += 1
                batch.append(item)
                chars += len(item.text)
                if chars >= BATCH_CHARS:
                    yield batch
                    yield beam.pvalue.TaggedOutput(COUNTS, report(counts))
                    batch, chars, counts = [], 0, Counts()
            elif isinstance(item, Dropped):
                counts.read += 1
                counts.drop(item.reason)
            elif isinstance(item, FileProblem):
                yield beam.pvalue.TaggedOutput(PROBLEMS, item)
        if batch:
            yield batch
        yield beam.pvalue.TaggedOutput(COUNTS, report(counts))


class ReadDocuments(beam.PTransform):
    """Files → ``list[Document]`` batches; side outputs ``counts`` and ``problems``."""

    def __init__(self, files: Sequence[InputFile], config: InputConfig, max_document_chars: int) -> None:
        super().__init__()
        self._files = list(files)
        self._config = config
        self._max_chars = max_document_chars

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadFileFn(self._config, self._max_chars)).with_outputs(
                COUNTS, PROBLEMS, main="documents")
        )
