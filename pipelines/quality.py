"""Quality stages between reading and cleaning-and-splitting: filters, then near-dedup.

Filters run first: they are per-document and cheap, and a document they remove should not
become the one a group of near-duplicates keeps. The first of them cleans every document as
``CleanAndSplit`` would (``mlm_data.quality.documents``) and marks the batch ``cleaned``, so
no later stage cleans it again; both hand on batches with their tallies, so the manifest's
ledger gains ``filter.<rule>`` and ``near_duplicate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import apache_beam as beam

from mlm_data.config.preprocess import CleanConfig, FilterConfig, PreprocessConfig
from mlm_data.quality.documents import clean
from mlm_data.quality.filters import QualityFilter
from mlm_data.reading.document_reader import Document
from mlm_data.stages.batches import Batch
from pipelines.counters import report
from pipelines.near_dedup import NearDedup


class FilterFn(beam.DoFn):
    def __init__(self, filters: FilterConfig, clean: CleanConfig) -> None:
        self._filters, self._clean = filters, clean

    def setup(self) -> None:
        self._filter = QualityFilter(self._filters)  # loads the language model, if used

    def process(self, batch: Batch) -> Iterator[Batch]:
        kept, counts = self._filter.filter_documents(batch.items, self._clean)
        report(counts)
        yield dataclasses.replace(batch, items=kept, counts=batch.counts + counts, cleaned=True)


class CleanFn(beam.DoFn):
    """Cleans every document once for near-dedup and the stages after it (when no filter did)."""

    def __init__(self, clean: CleanConfig) -> None:
        self._clean = clean

    def process(self, batch: Batch) -> Iterator[Batch]:
        yield dataclasses.replace(batch, items=[Document(d.id, clean(d.text, self._clean)) for d in batch.items],
                                  cleaned=True)


class QualityStages(beam.PTransform):
    """Document batches → the batches that pass ``filters`` and ``dedup`` (unchanged if both are off)."""

    def __init__(self, cfg: PreprocessConfig, *, spill_dir: str | None) -> None:
        super().__init__()
        self._cfg = cfg
        self._spill_dir = spill_dir

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        cfg = self._cfg
        if cfg.filters.enabled():
            batches = batches | "Filter" >> beam.ParDo(FilterFn(cfg.filters, cfg.clean))
        elif cfg.dedup.near_duplicates:
            batches = batches | "Clean" >> beam.ParDo(CleanFn(cfg.clean))
        if cfg.dedup.near_duplicates:
            batches = batches | "NearDedup" >> NearDedup(cfg.dedup, cfg.clean, seed=cfg.seed,
                                                         spill_dir=self._spill_dir)
        return batches
