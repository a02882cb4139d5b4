"""ReadDocuments: input files to batches of documents, with every document slot counted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam

from mlm_data.config.preprocess import InputConfig
from mlm_data.reading.input_files import InputFile
from mlm_data.stages.batches import Batch, read_batches
from pipelines.counters import report
from pipelines.progress import ProgressTally


class ReadFileFn(beam.DoFn):
    """Reads one file: text corpora as documents, labelled tasks as labelled records."""

    def __init__(self, config: InputConfig, max_document_chars: int, task: str, *,
                 progress_dir: str | None = None) -> None:
        self._config = config
        self._max_chars = max_document_chars
        self._task = task
        self._progress_dir = progress_dir

    def setup(self) -> None:
        self._progress = ProgressTally(self._progress_dir)

    def finish_bundle(self) -> None:
        self._progress.flush()

    def process(self, file: InputFile) -> Iterator[Batch]:
        for batch in read_batches(file, self._config, task=self._task, max_document_chars=self._max_chars):
            report(batch.counts)
            self._progress.add(documents_read=batch.counts.read, text_bytes_read=batch.chars_read)
            yield batch
        self._progress.add(files_read=1)


class ReadDocuments(beam.PTransform):
    """Files → ``Batch`` of ``list[Document]`` (or of labelled records for labelled tasks)."""

    def __init__(self, files: Sequence[InputFile], config: InputConfig, max_document_chars: int,
                 task: str, *, progress_dir: str | None = None) -> None:
        super().__init__()
        self._files = list(files)
        self._config = config
        self._max_chars = max_document_chars
        self._task = task
        self._progress_dir = progress_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadFileFn(self._config, self._max_chars, self._task,
                                                   progress_dir=self._progress_dir))
        )
