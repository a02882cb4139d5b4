"""CreateInstances, WriteShards and WriteManifest: the per-bucket half and the final commit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset.assemble import Summary, WrittenBucket, assemble, publish, write_bucket
from mlm_data.dataset.shards import IpcFormat
from mlm_data.instances.bucket_rows import BucketRows, build_rows
from mlm_data.lifetime import ProcessId, exit_if_orphaned
from mlm_data.reading.input_files import Inputs
from mlm_data.storage.lease import LeaseTicket
from mlm_data.text.tokenized import TokenizedDocuments
from mlm_data.text.tokenizer import TokenizerInfo
from pipelines.counters import report
from pipelines.shuffle import decode_payload


class CreateInstancesFn(beam.DoFn):
    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo) -> None:
        self._cfg = cfg
        self._tokenizer = tokenizer

    def process(self, element: tuple[tuple[str, int], Iterable[bytes | str]]) -> Iterator[object]:
        (split, bucket), payloads = element
        tables = [decode_payload(p) for p in payloads]
        docs = TokenizedDocuments.from_arrow(pa.concat_tables(tables))
        rows = build_rows(docs, cfg=self._cfg, tokenizer=self._tokenizer, split=split, bucket=bucket)
        report(rows.counts)
        yield (split, bucket), rows


class WriteShardsFn(beam.DoFn):
    """Writes a bucket's rows as shards of about the target size, straight to their final,
    content-addressed names; a retried bundle rewrites the same bytes to the same names. A
    worker whose driver is gone writes nothing more."""

    def __init__(self, root: str, target_bytes: int, id_itemsize: int, ipc_format: IpcFormat) -> None:
        self._root = root
        self._target = target_bytes
        self._itemsize = id_itemsize
        self._ipc_format = ipc_format
        self._driver = ProcessId.current()

    def process(self, element: tuple[tuple[str, int], BucketRows]) -> Iterator[WrittenBucket]:
        (split, bucket), rows = element
        yield write_bucket(self._root, split, bucket, rows, target_bytes=self._target, id_itemsize=self._itemsize,
                           ipc_format=self._ipc_format, driver=self._driver)


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

    ``create_rows`` turns one bucket's payloads into ``BucketRows`` (``CreateInstancesFn`` for
    text corpora). ``labels``, for the classification tasks, is a one-element PCollection
    holding the label vocabulary: ``create_rows`` then receives it as a side input, and the
    manifest records it.
    """

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, inputs: Inputs,
                 id_type: pa.DataType, create_rows: beam.DoFn, labels: beam.PCollection | None = None,
                 lease: LeaseTicket | None = None) -> None:
        super().__init__()
        self._lease = lease
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._id_type = id_type
        self._create_rows = create_rows
        self._labels = labels

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        keyed, summaries = inputs
        cfg = self._cfg
        labels = [] if self._labels is None else [beam.pvalue.AsSingleton(self._labels)]
        written = (
            keyed
            | "GroupIntoBuckets" >> beam.GroupByKey()
            | "CreateRows" >> beam.ParDo(self._create_rows, *labels)
            | "WriteShards" >> beam.ParDo(
                WriteShardsFn(cfg.output.path, cfg.output.target_shard_bytes,
                              np.dtype(self._id_type.to_pandas_dtype()).itemsize, cfg.output.ipc_format))
        )
        return (
            keyed.pipeline
            | "Commit" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                WriteManifestFn(cfg, self._tokenizer, inputs=self._inputs, id_dtype=str(self._id_type),
                                lease=self._lease),
                beam.pvalue.AsList(written), beam.pvalue.AsList(summaries), *labels)
        )
