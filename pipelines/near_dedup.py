"""NearDedup: MinHash LSH near-duplicate removal as Beam stages over document batches.

    batches ─┬─ Sign ─► (band key, member) ─ GroupByKey ─ VerifyBuckets ─► edges
             │            edges ─ (LargeStar ─ SmallStar) × max_rounds ─ Decide ─► (batch key, drop)
             └─ StoreBatches ─► (batch key, batch) ───────────── CoGroupByKey ─ ApplyDrops ─► batches

Every step is a ParDo or a GroupByKey, so it runs on any Beam runner; nothing is collected in
the driver. A band bucket, a node's neighbours and one batch with its drops are the largest
things a worker holds. A band entry's value is its document (node and a reference to its
verification record: sketch, and shingle set for short documents) pickled once per
document, not once per band, and unpickled only in the rare buckets with two or more
members: most band keys are unique, and then an entry costs the shuffle its bytes and nothing
else. On local runners, whose GroupByKey keeps everything in memory, the batches and the
records are spilled to scratch files and only their paths are shuffled (as
``pipelines.shuffle`` does for the bucket stage). Each output batch is its input batch less
the dropped documents, with the drops added to its tallies, so the accounting still rides
with the data.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from mlm_data import storage
from mlm_data.config.preprocess import CleanConfig, DedupConfig
from mlm_data.quality.clusters import Edge, Node, label, large_star, small_star, verify_bucket
from mlm_data.quality.near_dedup import MinHasher, apply_drops, batch_key, drop_reason, parse_record
from mlm_data.stages.batches import Batch
from pipelines.counters import report
from pipelines.shuffle import spill

RecordRef = bytes | tuple[str, int, int]
"""A document's verification record (``Signed.records``): the bytes, or ``(spill file, offset, length)``."""
Member = bytes
"""A band entry's value: the pickled ``(node, record reference)`` of its document."""


class SignFn(beam.DoFn):
    """One ``(band key, member)`` per band per document."""

    def __init__(self, dedup: DedupConfig, clean: CleanConfig, seed: int, spill_dir: str | None) -> None:
        self._dedup, self._clean, self._seed, self._spill_dir = dedup, clean, seed, spill_dir

    def setup(self) -> None:
        self._hasher = MinHasher(self._dedup, self._seed)

    def process(self, batch: Batch) -> Iterator[tuple[int, Member]]:
        signed = self._hasher.sign(batch.items, self._clean, already_clean=batch.cleaned)
        if not signed.nodes:
            return
        records = signed.records()
        refs: list[RecordRef]
        if self._spill_dir is None:
            refs = list(records)
        else:
            path = spill(b"".join(records), self._spill_dir, ".sketch")
            ends = np.cumsum([len(r) for r in records]).tolist()
            refs = [(path, end - len(r), len(r)) for end, r in zip(ends, records)]
        keys = signed.keys.view(np.int64).tolist()  # int64: Beam's deterministic varint key coder
        for node, ref, row in zip(signed.nodes, refs, keys):
            member = pickle.dumps((node, ref), protocol=pickle.HIGHEST_PROTOCOL)
            for key in row:
                yield key, member


class VerifyBucketFn(beam.DoFn):
    """Edges ``(hi, lo)`` between the members of one band bucket that pass verification."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        self._threshold, self._num_perm = threshold, num_perm

    def setup(self) -> None:
        self._files: OrderedDict[str, np.memmap] = OrderedDict()

    def _load(self, ref: RecordRef) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(ref, bytes):
            return parse_record(ref, self._num_perm)
        path, offset, length = ref
        data = self._files.get(path)
        if data is None:
            data = np.memmap(path, dtype=np.uint8, mode="r")
            self._files[path] = data
            if len(self._files) > 64:
                self._files.popitem(last=False)
        return parse_record(bytes(data[offset:offset + length]), self._num_perm)

    def process(self, element: tuple[int, Iterable[Member]]) -> Iterator[Edge]:
        _, members = element
        distinct = set(members)
        if len(distinct) < 2:
            return
        by_node: dict[Node, RecordRef] = dict(pickle.loads(m) for m in distinct)
        nodes = sorted(by_node)
        loaded = [self._load(by_node[n]) for n in nodes]
        sketches = np.stack([sketch for sketch, _ in loaded])
        for centre, member in verify_bucket(sketches, self._threshold, sets=[exact for _, exact in loaded]):
            yield nodes[member], nodes[centre]


def _both_ways(edge: Edge) -> Iterator[tuple[Node, Node]]:
    hi, lo = edge
    yield hi, lo
    yield lo, hi


def _large_star(element: tuple[Node, Iterable[Node]]) -> list[Edge]:
    return large_star(element[0], element[1])


def _small_star(element: tuple[Node, Iterable[Node]]) -> list[Edge]:
    return small_star(element[0], element[1])


def _decide(element: tuple[Node, Iterable[Node]]) -> tuple[str, tuple[str, str, str]]:
    node, smaller = element
    kept = label(smaller)
    return node[1], (node[0], drop_reason(node, kept), kept[0])


class StoreBatchFn(beam.DoFn):
    def __init__(self, spill_dir: str | None) -> None:
        self._spill_dir = spill_dir

    def process(self, batch: Batch) -> Iterator[tuple[str, Batch | str]]:
        key = batch_key(batch.items)
        if self._spill_dir is None:
            yield key, batch
        else:
            yield key, spill(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL), self._spill_dir, ".batch")


class ApplyDropsFn(beam.DoFn):
    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Batch]:
        _, grouped = element
        drops = {doc_id: reason for doc_id, reason, _ in grouped["drops"]}
        for stored in grouped["batch"]:
            if isinstance(stored, str):
                with open(stored, "rb") as f:
                    stored = pickle.loads(f.read())
            kept, counts = apply_drops(stored.items, drops)
            report(counts)
            yield dataclasses.replace(stored, items=kept, counts=stored.counts + counts)


class WriteClustersFn(beam.DoFn):
    """The debug file: one JSON line per dropped document, sorted by id."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, decisions: list[tuple[str, tuple[str, str, str]]]) -> Iterator[None]:
        lines = [json.dumps({"id": d, "kept": kept, "reason": reason}, ensure_ascii=False)
                 for d, reason, kept in sorted(v for _, v in decisions)]
        storage.write_bytes(self._path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        return iter(())


class NearDedup(beam.PTransform):
    """Batches → the same batches without near-duplicates (see the module docstring)."""

    def __init__(self, dedup: DedupConfig, clean: CleanConfig, *, seed: int, spill_dir: str | None) -> None:
        super().__init__()
        self._dedup, self._clean, self._seed, self._spill_dir = dedup, clean, seed, spill_dir

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        cfg = self._dedup
        edges = (
            batches
            | "Sign" >> beam.ParDo(SignFn(cfg, self._clean, self._seed, self._spill_dir))
            | "GroupBands" >> beam.GroupByKey()
            | "VerifyBuckets" >> beam.ParDo(VerifyBucketFn(cfg.jaccard_threshold, cfg.num_perm))
        )
        for r in range(cfg.max_rounds):
            edges = (
                edges
                | f"LargeStarEdges{r}" >> beam.FlatMap(_both_ways)
                | f"LargeStarGroup{r}" >> beam.GroupByKey()
                | f"LargeStar{r}" >> beam.FlatMap(_large_star)
                | f"SmallStarGroup{r}" >> beam.GroupByKey()
                | f"SmallStar{r}" >> beam.FlatMap(_small_star)
            )
        decisions = edges | "GroupByLarger" >> beam.GroupByKey() | "Decide" >> beam.Map(_decide)
        if cfg.write_clusters:
            _ = (decisions | "CollectClusters" >> beam.combiners.ToList()
                 | "WriteClusters" >> beam.ParDo(WriteClustersFn(cfg.write_clusters)))
        stored = batches | "StoreBatches" >> beam.ParDo(StoreBatchFn(self._spill_dir))
        return (
            {"batch": stored, "drops": decisions}
            | "JoinDrops" >> beam.CoGroupByKey()
            | "ApplyDrops" >> beam.ParDo(ApplyDropsFn())
        )
