"""The classification tasks in Beam: EncodeLabelled, RouteLabelled, LabelVocabulary, WriteLabelledBucket.

They plug into the same read and write transforms as text corpora; only the middle differs
(see ``mlm_data/stages/prepare_labelled.py`` for why routing is by record id and labels get their ids
late).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam

from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset.assemble import WrittenBucket
from mlm_data.dataset.schema import schema_for
from mlm_data.instances.labelled_rows import order_labels
from mlm_data.lifetime import ProcessId
from mlm_data.stages.batches import Batch
from mlm_data.stages.prepare_labelled import (
    build_labelled_rows,
    encode_records,
    labels_in,
    route_rows,
)
from mlm_data.stages.write_bucket import write_rows_bucket
from mlm_data.text.tokenizer import TextEncoder, TokenizerInfo, load_tokenizer
from pipelines.counters import report
from pipelines.progress import ProgressTally
from pipelines.shuffle import decode_payload, encode_payload


class EncodeLabelledFn(beam.DoFn):
    """Cleans and tokenizes labelled records; labels stay strings until the vocabulary is known."""

    def __init__(self, cfg: PreprocessConfig, tokenizer_url: str, sha256: str, *, cls_id: int, sep_id: int) -> None:
        self._cfg = cfg
        self._tokenizer_url = tokenizer_url
        self._sha256 = sha256
        self._cls = cls_id
        self._sep = sep_id

    def setup(self) -> None:
        self._tok = load_tokenizer(self._tokenizer_url, sha256=self._sha256)
        self._encoder = TextEncoder(self._tok)

    def process(self, batch: Batch) -> Iterator[Batch]:
        rows, counts, facts = encode_records(batch.items, self._cfg, self._tok, self._encoder, cls_id=self._cls,
                                             sep_id=self._sep)
        report(counts)
        yield Batch(items=rows, counts=counts, facts=facts)


class RouteLabelledFn(beam.DoFn):
    def __init__(self, *, num_buckets: int, validation_buckets: int, validation_fraction: float,
                 spill_dir: str | None) -> None:
        self._args = dict(num_buckets=num_buckets, validation_buckets=validation_buckets,
                          validation_fraction=validation_fraction)
        self._spill_dir = spill_dir

    def process(self, batch: Batch) -> Iterator[tuple[tuple[str, int], bytes | str]]:
        routed = route_rows(batch.items, **self._args)
        for key in sorted(routed):
            payload = routed[key].to_arrow()
            yield key, encode_payload(payload, spill_dir=self._spill_dir)


class WriteLabelledBucketFn(beam.DoFn):
    """One bucket of labelled rows → its shards (fine-tuning sets are small: one piece). A
    worker whose driver is gone writes nothing more."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, id_itemsize: int,
                 progress_dir: str | None = None) -> None:
        self._cfg = cfg
        self._schema = schema_for(cfg.instances.task, vocab_size=tokenizer.vocab_size)
        self._itemsize = id_itemsize
        self._progress_dir = progress_dir
        self._driver = ProcessId.current()

    def setup(self) -> None:
        self._progress = ProgressTally(self._progress_dir)

    def process(self, element: tuple[tuple[str, int], Iterable[bytes | str]],
                labels: list[str]) -> Iterator[WrittenBucket]:
        (split, bucket), payloads = element
        parts = [decode_payload(p) for p in payloads]
        rows = build_labelled_rows(parts, task=self._cfg.instances.task, vocabulary=labels, schema=self._schema,
                                   seed=self._cfg.seed, split=split, bucket=bucket,
                                   max_seq_length=self._cfg.instances.max_seq_length)
        report(rows.counts)
        result = write_rows_bucket(rows, cfg=self._cfg, split=split, bucket=bucket, id_itemsize=self._itemsize,
                                   driver=self._driver)
        self._progress.add(rows_written=rows.table.num_rows, row_tokens_written=int(rows.row_tokens.sum()),
                           shards_written=len(result.shards), buckets_written=1)
        self._progress.flush()
        yield result


def labels_of(batch: Batch) -> set[str]:
    return labels_in(batch.items)


def union(sets: Iterable[set[str]]) -> set[str]:
    return set().union(*sets)


class LabelVocabulary(beam.PTransform):
    """The label list: given up front, or every label seen in the input, in ``order_labels`` order."""

    def __init__(self, fixed: Sequence[str] | None) -> None:
        super().__init__()
        self._fixed = None if fixed is None else list(fixed)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        if self._fixed is not None:
            return batches.pipeline | "FixedLabels" >> beam.Create([self._fixed])
        return (
            batches
            | "LabelsSeen" >> beam.Map(labels_of)
            | "AllLabels" >> beam.CombineGlobally(union)
            | "OrderLabels" >> beam.Map(order_labels)
        )


class PrepareLabelled(beam.PTransform):
    """Labelled record batches → keyed payloads, per-batch summaries, and the label vocabulary."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, tokenizer_url: str, num_buckets: int,
                 validation_buckets: int, fixed_labels: Sequence[str] | None, spill_dir: str | None) -> None:
        super().__init__()
        self._cfg = cfg
        self._encode = EncodeLabelledFn(cfg, tokenizer_url, tokenizer.sha256, cls_id=int(tokenizer.special.cls),  # type: ignore[arg-type]
                                        sep_id=int(tokenizer.special.sep))  # type: ignore[arg-type]
        self._route = dict(num_buckets=num_buckets, validation_buckets=validation_buckets,
                           validation_fraction=cfg.output.validation_fraction, spill_dir=spill_dir)
        self._fixed = fixed_labels

    def expand(self, batches: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        encoded = batches | "EncodeLabelled" >> beam.ParDo(self._encode)
        keyed = encoded | "RouteLabelled" >> beam.ParDo(RouteLabelledFn(**self._route))
        summaries = (
            (batches | "ReadSummaries" >> beam.Map(Batch.summary),
             encoded | "EncodeSummaries" >> beam.Map(Batch.summary))
            | "Summaries" >> beam.Flatten()
        )
        labels = batches | "LabelVocabulary" >> LabelVocabulary(self._fixed)
        return keyed, summaries, labels
