"""CleanAndSplit, Tokenize and AssignBuckets: the per-document half of the pipeline."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from mlm_data.accounting import Counts
from mlm_data.config.preprocess import CleanConfig
from mlm_data.instances.donors import DonationConfig
from mlm_data.stages import prepare_documents
from mlm_data.stages.batches import Batch
from mlm_data.text.tokenizer import TextEncoder, load_tokenizer
from pipelines.counters import report
from pipelines.progress import ProgressTally
from pipelines.shuffle import encode_payload


class CleanAndSplitFn(beam.DoFn):
    def __init__(self, config: CleanConfig) -> None:
        self._config = config

    def process(self, batch: Batch) -> Iterator[Batch]:
        counts = Counts()
        kept = prepare_documents.clean_and_split(batch.items, self._config, counts, already_clean=batch.cleaned)
        report(counts)
        yield Batch(items=kept, counts=counts)


class _EncoderPool:
    """Encoders no DoFn instance is using, for this process: the last few given back.

    Beam's DaskRunner sets up and tears down every DoFn once per partition; taking a warm
    encoder (its chunk cache full) from here instead of loading the tokenizer again makes a
    partition cost what its documents cost. An encoder is lent to one instance at a time,
    never shared, because its cache is not thread-safe. Keyed by tokenizer URL, hash and a
    token drawn when the pipeline is built: an encoder only serves the run it was made for,
    so a second run in the same process starts as cold as a run from the command line.
    """

    def __init__(self, keep: int = 2) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._free: list[tuple[tuple[str, str, str], TextEncoder]] = []

    def take(self, key: tuple[str, str, str]) -> TextEncoder:
        with self._lock:
            for i, (k, encoder) in enumerate(self._free):
                if k == key:
                    del self._free[i]
                    return encoder
        url, sha256, _ = key
        return TextEncoder(load_tokenizer(url, sha256=sha256))

    def give_back(self, key: tuple[str, str, str], encoder: TextEncoder) -> None:
        with self._lock:
            self._free.append((key, encoder))
            del self._free[:-self._keep]


_ENCODERS = _EncoderPool()


class TokenizeFn(beam.DoFn):
    """Tokenizes whole batches, overlapping the tokenizer with the rest of the pipeline.

    The Rust tokenizer releases the GIL, so batch ``k`` is tokenized on a helper thread while
    this thread hands on batch ``k-1`` and the upstream stages read and split batch ``k+1``.
    At most one batch is in flight, so memory stays bounded. The last batch of a bundle leaves
    in ``finish_bundle``; runners that drop such output (Beam's DaskRunner) get
    ``overlap=False``. Workers read the tokenizer from
    the dataset folder (checking its hash) once, in ``setup()``, never at graph-construction
    time, and the pickled pipeline stays small; a worker process reuses a torn-down
    instance's encoder (see ``_EncoderPool``).
    """

    def __init__(self, tokenizer_url: str, sha256: str, *, overlap: bool = True,
                 progress_dir: str | None = None) -> None:
        self._encoder_key = (tokenizer_url, sha256, secrets.token_hex(8))
        self._overlap = overlap
        self._progress_dir = progress_dir

    def setup(self) -> None:
        self._encoder = _ENCODERS.take(self._encoder_key)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self._pending: Future | None = None
        self._progress = ProgressTally(self._progress_dir)

    def _tokenize(self, batch: Batch) -> Batch:
        counts = Counts()
        docs = prepare_documents.tokenize_documents(self._encoder, batch.items, counts)
        report(counts)
        return Batch(items=docs, counts=counts)

    def start_bundle(self) -> None:
        self._pending = None

    def _done(self, batch: Batch) -> Batch:
        self._progress.add(tokens=len(batch.items.ids))
        return batch

    def process(self, batch: Batch) -> Iterator[Batch]:
        if not self._overlap:
            yield self._done(self._tokenize(batch))
            return
        future = self._pool.submit(self._tokenize, batch)
        previous, self._pending = self._pending, future
        if previous is not None:
            yield self._done(previous.result())

    def finish_bundle(self) -> Iterator[object]:
        if self._pending is not None:
            previous, self._pending = self._pending, None
            yield GlobalWindows.windowed_value(self._done(previous.result()))
        self._progress.flush()

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
            _ENCODERS.give_back(self._encoder_key, self._encoder)


class AssignBucketsFn(beam.DoFn):
    """Emits one ``((split, bucket), payload)`` per bucket the batch touches: its documents and,
    for BERT pairs, the segments donated to that bucket as random-next partners.

    Payloads are Arrow IPC (token ids in the dataset's id width), compact and cheap to encode,
    or the path of a spill file holding them on local runners (see ``pipelines.shuffle``).
    """

    def __init__(self, *, num_buckets: int, validation_buckets: int, validation_fraction: float,
                 id_type: pa.DataType, donations: DonationConfig | None, spill_dir: str | None) -> None:
        self._spill_dir = spill_dir
        self._num_buckets = num_buckets
        self._validation_buckets = validation_buckets
        self._validation_fraction = validation_fraction
        self._id_type = id_type
        self._donations = donations

    def process(self, batch: Batch) -> Iterator[tuple[tuple[str, int], bytes | str]]:
        routed = prepare_documents.assign_buckets(batch.items, num_buckets=self._num_buckets,
                                                  validation_buckets=self._validation_buckets,
                                                  validation_fraction=self._validation_fraction,
                                                  id_type=self._id_type, donations=self._donations)
        for key, payload in routed.items():
            yield key, encode_payload(payload, spill_dir=self._spill_dir)


class PrepareDocuments(beam.PTransform):
    """Document batches → keyed, tokenized bucket payloads, plus one summary per batch
    (its drop tallies and file problems) for the manifest."""

    def __init__(self, *, clean: CleanConfig, tokenizer_url: str, tokenizer_sha256: str, num_buckets: int,
                 validation_buckets: int, validation_fraction: float, id_type: pa.DataType,
                 donations: DonationConfig | None = None, overlap_tokenization: bool = True,
                 spill_dir: str | None = None, progress_dir: str | None = None) -> None:
        super().__init__()
        self._clean = clean
        self._tokenizer = (tokenizer_url, tokenizer_sha256)
        self._overlap = overlap_tokenization
        self._progress_dir = progress_dir
        self._bucket_args = dict(num_buckets=num_buckets, validation_buckets=validation_buckets,
                                 validation_fraction=validation_fraction, id_type=id_type, donations=donations,
                                 spill_dir=spill_dir)

    def expand(self, batches: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cleaned = batches | "CleanAndSplit" >> beam.ParDo(CleanAndSplitFn(self._clean))
        tokenized = cleaned | "Tokenize" >> beam.ParDo(TokenizeFn(*self._tokenizer, overlap=self._overlap,
                                                                  progress_dir=self._progress_dir))
        keyed = tokenized | "AssignBuckets" >> beam.ParDo(AssignBucketsFn(**self._bucket_args))
        summaries = (
            (batches | "ReadSummaries" >> beam.Map(Batch.summary),
             cleaned | "CleanSummaries" >> beam.Map(Batch.summary),
             tokenized | "TokenizeSummaries" >> beam.Map(Batch.summary))
            | "Summaries" >> beam.Flatten()
        )
        return keyed, summaries
