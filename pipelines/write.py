"""WriteBuckets and WriteManifest: the per-bucket half and the final commit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset.assemble import Summary, WrittenBucket, assemble, publish
from mlm_data.lifetime import ProcessId, exit_if_orphaned
from mlm_data.reading.input_files import Inputs
from mlm_data.stages.write_bucket import WindowDone, write_document_bucket
from mlm_data.storage.lease import LeaseTicket
from mlm_data.text.tokenizer import TokenizerInfo
from pipelines.counters import report
from pipelines.memory import release_free_memory
from pipelines.progress import ProgressTally
from pipelines.shuffle import decode_payload, local_payloads


class WriteDocumentBucketFn(beam.DoFn):
    """One bucket of tokenized documents → its shards, a window at a time
    (``mlm_data.stages.write_bucket``). Shards go straight to their final, content-addressed
    names; a retried bundle rewrites the same bytes to the same names. A worker whose driver is
    gone writes nothing more."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, id_itemsize: int,
                 progress_dir: str | None = None) -> None:
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._itemsize = id_itemsize
        self._driver = ProcessId.current()
        self._progress_dir = progress_dir

    def setup(self) -> None:
        self._progress = ProgressTally(self._progress_dir)

    def process(self, element: tuple[tuple[str, int], Iterable[bytes | str]]) -> Iterator[WrittenBucket]:
        (split, bucket), payloads = element

        def on_window(done: WindowDone) -> None:
            self._progress.add(tokens_placed=done.document_tokens, rows_written=done.rows,
                               row_tokens_written=done.row_tokens)
            release_free_memory()

        with local_payloads(payloads) as paths:
            result = write_document_bucket(lambda: (decode_payload(p) for p in paths), cfg=self._cfg,
                                           tokenizer=self._tokenizer, split=split, bucket=bucket,
                                           id_itemsize=self._itemsize, driver=self._driver, on_window=on_window)
        report(result.counts)
        self._progress.add(shards_written=len(result.shards), buckets_written=1)
        self._progress.flush()
        yield result


class WriteManifestFn(beam.DoFn):
    """Runs once, after every shard exists: checks the accounting and publishes the manifest
    (if the run still holds the output's writer lease and its driver is alive)."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, inputs: Inputs, id_dtype: str,
                 lease: LeaseTicket | None) -> None:
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._id_dtype = id_dtype
        self._lease = lease
        self._driver = ProcessId.current()

    def process(self, _: object, buckets: list[WrittenBucket], summaries: list[Summary],
                labels: list[str] | None = None) -> Iterator[dict[str, Any]]:
        manifest = assemble(self._cfg, self._tokenizer, inputs=self._inputs, id_dtype=self._id_dtype,
                            buckets=buckets, summaries=summaries, labels=labels)
        exit_if_orphaned(self._driver)
        publish(self._cfg.output.path, manifest, inputs=self._inputs, lease=self._lease)  # type: ignore[arg-type]
        yield manifest["totals"]


class WriteDataset(beam.PTransform):
    """Keyed bucket payloads + per-batch summaries → shards and, last, the manifest.

    ``write_bucket`` turns one bucket's payloads into its shards and a ``WrittenBucket``
    (``WriteDocumentBucketFn`` for text corpora). ``labels``, for the classification tasks, is
    a one-element PCollection holding the label vocabulary: ``write_bucket`` then receives it
    as a side input, and the manifest records it.
    """

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, inputs: Inputs,
                 id_type: pa.DataType, write_bucket: beam.DoFn, labels: beam.PCollection | None = None,
                 lease: LeaseTicket | None = None) -> None:
        super().__init__()
        self._lease = lease
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._id_type = id_type
        self._write_bucket = write_bucket
        self._labels = labels

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        keyed, summaries = inputs
        cfg = self._cfg
        labels = [] if self._labels is None else [beam.pvalue.AsSingleton(self._labels)]
        written = (
            keyed
            | "GroupIntoBuckets" >> beam.GroupByKey()
            | "WriteBuckets" >> beam.ParDo(self._write_bucket, *labels)
        )
        return (
            keyed.pipeline
            | "Commit" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                WriteManifestFn(cfg, self._tokenizer, inputs=self._inputs, id_dtype=str(self._id_type),
                                lease=self._lease),
                beam.pvalue.AsList(written), beam.pvalue.AsList(summaries), *labels)
        )
