"""CreateInstances, WriteShards and WriteManifest: the per-bucket half and the final commit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from mlm_data import __version__
from mlm_data.accounting import Counts
from mlm_data.config.loading import to_dict
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset import stats
from mlm_data.dataset.manifest import ShardEntry, build_manifest_data
from mlm_data.dataset.publication import publish, tokenizer_name
from mlm_data.dataset.schema import SCHEMA_VERSION
from mlm_data.dataset.shards import IpcFormat, shard_stem, split_points, write_shard
from mlm_data.errors import DatasetError, InputError
from mlm_data.instances.bucket_rows import BucketRows, build_rows
from mlm_data.lifetime import ProcessId, exit_if_orphaned
from mlm_data.reading.document_reader import FileProblem
from mlm_data.storage.lease import LeaseTicket
from mlm_data.text.tokenized import TokenizedDocuments
from mlm_data.text.tokenizer import TokenizerInfo
from pipelines.counters import report
from pipelines.shuffle import decode_payload


class CreateInstancesFn(beam.DoFn):
    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo) -> None:
        self._cfg = cfg
        self._tokenizer = tokenizer

    def process(self, element: tuple[tuple[str, int], Iterable[bytes | str]], _labels: None) -> Iterator[object]:
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

    def process(self, element: tuple[tuple[str, int], BucketRows]) -> Iterator[dict[str, Any]]:
        (split, bucket), rows = element
        row_bytes = rows.row_tokens * (self._itemsize + 0.125) + 16
        entries = []
        for part, (lo, hi) in enumerate(split_points(row_bytes, self._target)):
            exit_if_orphaned(self._driver)
            written = write_shard(self._root, shard_stem(split, bucket, part), rows.table.slice(lo, hi - lo),
                                  ipc_format=self._ipc_format)
            entries.append(ShardEntry(path=written.path, split=split, num_rows=written.num_rows,
                                      num_tokens=int(rows.row_tokens[lo:hi].sum()), num_bytes=written.num_bytes,
                                      sha256=written.sha256))
        yield {"split": split, "shards": entries, "stats": rows.stats, "counts": rows.counts}


class WriteManifestFn(beam.DoFn):
    """Runs once, after every shard exists: checks the accounting and publishes the manifest
    (if the run still holds the output's writer lease)."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, num_files: int, id_dtype: str,
                 lease: LeaseTicket | None) -> None:
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._num_files = num_files
        self._id_dtype = id_dtype
        self._lease = lease
        self._driver = ProcessId.current()

    def process(self, _: object, buckets: list[dict[str, Any]],
                summaries: list[tuple[Counts, list[FileProblem], dict[str, int]]],
                labels: list[str] | None) -> Iterator[dict[str, Any]]:
        cfg = self._cfg
        total = Counts.total([c for c, _, _ in summaries] + [b["counts"] for b in buckets])
        problems = [p for _, ps, _ in summaries for p in ps]
        facts: dict[str, int] = {}
        for _, _, f in summaries:
            for k, v in f.items():
                facts[k] = facts.get(k, 0) + v
        if not total.balanced():
            raise DatasetError(
                f"{cfg.output.path}: not published: {total.read} documents read but {total.written} written and "
                f"{sum(total.dropped.values())} dropped; the runner lost output between stages, so the "
                "dataset would be incomplete. Re-run, or use another runner"
            )
        shards = [s for b in buckets for s in b["shards"]]
        if not shards:
            dropped = ", ".join(f"{k}: {v}" for k, v in sorted(total.dropped.items())) or "none"
            raise InputError(
                f"{', '.join(cfg.input.paths)}: no training rows were produced ({total.read} documents read, "
                f"dropped: {dropped}); check input.format, input.text_field and the clean.* limits"
            )
        per_split: dict[str, list[dict[str, Any]]] = {}
        for b in buckets:
            if b["shards"]:
                per_split.setdefault(b["split"], []).append(b["stats"])
        problem_list = sorted(({"file": p.name, "reason": p.reason, "detail": p.detail} for p in problems),
                              key=lambda p: (p["file"], p["reason"]))
        data = build_manifest_data(
            task=cfg.instances.task,
            schema_version=SCHEMA_VERSION,
            id_dtype=self._id_dtype,
            ipc_format=cfg.output.ipc_format,
            max_seq_length=cfg.instances.max_seq_length,
            static_masking=cfg.masking.enabled,
            tokenizer=self._tokenizer.as_manifest(tokenizer_name(self._tokenizer.sha256)),
            config=recorded_config(cfg),
            shards=shards,
            counts={**total.as_manifest(), **({"tokenization": dict(sorted(facts.items()))} if facts else {})},
            files={"listed": self._num_files, "problems": problem_list},
            stats={k: stats.merge(sorted(v, key=_stats_order)) for k, v in per_split.items()},
            labels=labels,
            created_by=f"mlm-data {__version__}",
        )
        exit_if_orphaned(self._driver)
        publish(cfg.output.path, data, lease=self._lease)  # type: ignore[arg-type]
        yield data["totals"]


def recorded_config(cfg: PreprocessConfig) -> dict[str, Any]:
    """The config as the manifest records it: what shaped the data, not where it was written
    (so a dataset written to two places has byte-identical manifests)."""
    data = to_dict(cfg)
    data["output"] = {k: v for k, v in data["output"].items() if k not in ("path", "overwrite")}
    return data


def _stats_order(s: dict[str, Any]) -> tuple[int, int]:
    # Merging is addition, so order does not change the result; sorting keeps it reproducible
    # even for floating-point fields.
    return (int(s.get("rows", 0)), int(s.get("tokens", 0)))


class WriteDataset(beam.PTransform):
    """Keyed bucket payloads + per-batch summaries → shards and, last, the manifest.

    ``create_rows`` turns one bucket's payloads into ``BucketRows`` (``CreateInstancesFn`` for
    text corpora); ``labels`` is a one-element PCollection holding the label vocabulary (or
    ``None``), used by ``create_rows`` and recorded in the manifest.
    """

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, num_files: int,
                 id_type: pa.DataType, create_rows: beam.DoFn, labels: beam.PCollection,
                 lease: LeaseTicket | None = None) -> None:
        super().__init__()
        self._lease = lease
        self._cfg = cfg
        self._tokenizer = tokenizer
        self._num_files = num_files
        self._id_type = id_type
        self._create_rows = create_rows
        self._labels = labels

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        keyed, summaries = inputs
        cfg = self._cfg
        labels = beam.pvalue.AsSingleton(self._labels)
        written = (
            keyed
            | "GroupIntoBuckets" >> beam.GroupByKey()
            | "CreateRows" >> beam.ParDo(self._create_rows, labels)
            | "WriteShards" >> beam.ParDo(
                WriteShardsFn(cfg.output.path, cfg.output.target_shard_bytes,
                              np.dtype(self._id_type.to_pandas_dtype()).itemsize, cfg.output.ipc_format))
        )
        pbegin = keyed.pipeline
        return (
            pbegin
            | "Commit" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                WriteManifestFn(cfg, self._tokenizer, num_files=self._num_files, id_dtype=str(self._id_type),
                                lease=self._lease),
                beam.pvalue.AsList(written), beam.pvalue.AsList(summaries), labels)
        )
