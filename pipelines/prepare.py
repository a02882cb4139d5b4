"""CleanAndSplit, Tokenize and AssignBuckets: the per-document half of the pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa

from mlm_data import prepare
from mlm_data.accounting import Counts
from mlm_data.config import CleanConfig
from mlm_data.readers import Document
from mlm_data.tokenization import parse_tokenizer
from mlm_data.tokenized import TokenizedDocuments
from pipelines.metrics import report
from pipelines.read import COUNTS


class CleanAndSplitFn(beam.DoFn):
    def __init__(self, config: CleanConfig) -> None:
        self._config = config

    def process(self, batch: list[Document]) -> Iterator[object]:
        counts = Counts()
        kept = prepare.clean_and_split(batch, self._config, counts)
        if kept:
            yield kept
        yield beam.pvalue.TaggedOutput(COUNTS, report(counts))


class TokenizeFn(beam.DoFn):
    """Tokenizes whole batches with the Rust tokenizer's own thread pool.

    The tokenizer travels as JSON text and is parsed once per worker in ``setup()``, never at
    graph-construction time.
    """

    def __init__(self, tokenizer_json: str) -> None:
        self._tokenizer_json = tokenizer_json
        self._tok = None

    def setup(self) -> None:
        self._tok = parse_tokenizer(self._tokenizer_json, source="tokenizer")

    def process(self, batch: list[prepare.SplitDocument]) -> Iterator[object]:
        counts = Counts()
        docs = prepare.tokenize_documents(self._tok, batch, counts)
        if docs.num_docs:
            yield docs
        yield beam.pvalue.TaggedOutput(COUNTS, report(counts))


class AssignBucketsFn(beam.DoFn):
    """Emits one ``((split, bucket), Arrow IPC bytes)`` per bucket the batch touches.

    Arrow bytes are compact (token ids in the dataset's id width) and cheap to encode, which
    matters because runners hold or ship everything that crosses the GroupByKey.
    """

    def __init__(self, *, num_buckets: int, validation_buckets: int, validation_fraction: float,
                 id_type: pa.DataType) -> None:
        self._num_buckets = num_buckets
        self._validation_buckets = validation_buckets
        self._validation_fraction = validation_fraction
        self._id_type = id_type

    def process(self, docs: TokenizedDocuments) -> Iterator[tuple[tuple[str, int], bytes]]:
        routed = prepare.assign_buckets(docs, num_buckets=self._num_buckets,
                                        validation_buckets=self._validation_buckets,
                                        validation_fraction=self._validation_fraction)
        for key in sorted(routed):
            batch = routed[key].to_arrow(self._id_type)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            yield key, sink.getvalue().to_pybytes()


class PrepareDocuments(beam.PTransform):
    """Document batches → keyed, tokenized bucket payloads; drop counts to ``counts``."""

    def __init__(self, *, clean: CleanConfig, tokenizer_json: str, num_buckets: int,
                 validation_buckets: int, validation_fraction: float, id_type: pa.DataType) -> None:
        super().__init__()
        self._clean = clean
        self._tokenizer_json = tokenizer_json
        self._bucket_args = dict(num_buckets=num_buckets, validation_buckets=validation_buckets,
                                 validation_fraction=validation_fraction, id_type=id_type)

    def expand(self, batches: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cleaned = batches | "CleanAndSplit" >> beam.ParDo(CleanAndSplitFn(self._clean)).with_outputs(
            COUNTS, main="documents")
        tokenized = cleaned.documents | "Tokenize" >> beam.ParDo(TokenizeFn(self._tokenizer_json)).with_outputs(
            COUNTS, main="documents")
        keyed = tokenized.documents | "AssignBuckets" >> beam.ParDo(AssignBucketsFn(**self._bucket_args))
        counts = (cleaned[COUNTS], tokenized[COUNTS]) | "MergeCounts" >> beam.Flatten()
        return keyed, counts
