"""Everything decided before the pipeline runs: the tokenizer, the label list and the buckets.

The driver lists the inputs, calls these, then builds the Beam graph from their results; they
need no Beam, so ``mlm-data train-tokenizer`` runs them without it. Each depends only on the
config and the input files (never on the runner), so every runner builds the same graph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlm_data import storage
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.console import write_stderr
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.schema import LABELLED_TASKS
from mlm_data.errors import ConfigError, InputError, StorageError
from mlm_data.progress import LinePrinter, ProgressSettings, Throttle, format_sample_progress
from mlm_data.reading import labelled_reader
from mlm_data.reading.document_reader import Document, InputFile, read_documents
from mlm_data.reading.text_size import estimate_text_bytes
from mlm_data.text.cleaning import clean_text
from mlm_data.text.tokenizer import (
    TokenizerInfo,
    describe,
    parse_tokenizer,
    require_specials,
    train_wordpiece,
    user_tokenizer_text,
)

#: Bytes of shard per byte of input text: ~4 characters per token, 2 bytes per uint16 id,
#: plus word-start bits and offsets. Only used to pick a bucket count.
_SHARD_BYTES_PER_TEXT_BYTE = 0.6


@dataclass(frozen=True)
class BucketPlan:
    num_buckets: int
    validation_buckets: int
    estimated_text_bytes: int
    """From file metadata (``reading.text_size``); printed, and the basis of automatic counts."""


def text_columns(cfg: PreprocessConfig) -> list[str]:
    """The input columns that hold the task's text (and labels)."""
    if cfg.instances.task in LABELLED_TASKS:
        return [c.name for c in labelled_reader.view(cfg.input, cfg.instances.task).columns]
    return [cfg.input.text_field]


def plan_buckets(cfg: PreprocessConfig, files: Sequence[InputFile], vocab_size: int) -> BucketPlan:
    """Bucket counts from the config, or from the input's text size so a bucket fills about
    one shard. Depends only on file metadata and the config, so every runner agrees."""
    text_bytes = estimate_text_bytes(files, fmt=cfg.input.format, columns=text_columns(cfg))
    id_bytes = 2 if vocab_size <= 1 << 16 else 4
    per_text = _SHARD_BYTES_PER_TEXT_BYTE * id_bytes / 2 * cfg.instances.dupe_factor
    train_fraction = 1.0 - cfg.output.validation_fraction
    if cfg.output.num_buckets:
        n = cfg.output.num_buckets
    else:
        n = max(1, math.ceil(text_bytes * per_text * train_fraction / cfg.output.target_shard_bytes))
    v = 0
    if cfg.output.validation_fraction > 0:
        v = max(1, math.ceil(n * cfg.output.validation_fraction / max(train_fraction, 1e-9)))
    return BucketPlan(num_buckets=n, validation_buckets=v, estimated_text_bytes=text_bytes)


def training_texts(cfg: PreprocessConfig, files: Sequence[InputFile], *,
                   on_document: Callable[[int, int], None] | None = None) -> list[str]:
    """Cleaned document texts for tokenizer training, in id order, up to the sample size.

    ``on_document(documents, characters)`` is called after each document (for progress)."""
    texts: list[str] = []
    chars = 0
    budget = cfg.tokenizer.train_sample_bytes
    for f in files:
        for item in read_documents(f, cfg.input, max_document_chars=cfg.clean.max_document_chars):
            if not isinstance(item, Document):
                continue
            text = clean_text(item.text, normalization=cfg.clean.unicode_normalization,
                              remove_control_chars=cfg.clean.remove_control_chars)
            texts.append(text)
            chars += len(text)
            if on_document is not None:
                on_document(len(texts), chars)
            if chars >= budget:
                return texts
    return texts


def resolve_tokenizer(cfg: PreprocessConfig, files: Sequence[InputFile], *, echo: Callable[[str], None],
                      progress: ProgressSettings | None = None,
                      write: Callable[[str], None] = write_stderr) -> tuple[str, TokenizerInfo]:
    """The tokenizer JSON (read from ``tokenizer.path``, or trained on the input) and its
    description, checked against the task's special tokens.

    With ``progress``, a line follows the reading of the training sample (through ``echo``, or
    rewritten in place with ``write`` on a terminal, where ``tokenizers`` then draws its own
    progress bars for the training)."""
    if not cfg.tokenizer.path and cfg.instances.task in LABELLED_TASKS:
        raise ConfigError(f"tokenizer.path: task {cfg.instances.task!r} needs the tokenizer of the model you will "
                          "fine-tune; pass --tokenizer (e.g. the pretraining dataset: --tokenizer DATASET)")
    if cfg.tokenizer.path:
        text, source = user_tokenizer_text(cfg.tokenizer.path)
    else:
        started = time.perf_counter()
        printer = None if progress is None else LinePrinter(progress, emit=echo, write=write)
        on_document = None
        if printer is not None:
            throttle = Throttle(progress.interval, wait_first=True)  # type: ignore[union-attr]

            def on_document(docs: int, chars: int) -> None:
                if throttle.ready():
                    printer.show(format_sample_progress(docs, chars, cfg.tokenizer.train_sample_bytes,
                                                        elapsed=time.perf_counter() - started))
        texts = training_texts(cfg, files, on_document=on_document)
        if not texts:
            raise InputError(f"{', '.join(cfg.input.paths)}: no documents to train a tokenizer on")
        if printer is not None:
            printer.end()
            echo(f"training a WordPiece tokenizer on {len(texts)} documents "
                 f"({sum(map(len, texts)) / 1e6:,.1f} MB of text)")
        text = train_wordpiece(texts, vocab_size=cfg.tokenizer.vocab_size, lowercase=cfg.tokenizer.lowercase,
                               show_progress=progress is not None and progress.terminal)
        source = "trained tokenizer"
        echo(f"trained a WordPiece tokenizer ({cfg.tokenizer.vocab_size} entries max) on "
             f"{len(texts)} documents in {time.perf_counter() - started:.1f}s")
    tok = parse_tokenizer(text, source=source)
    info = describe(tok, text)
    require_specials(info, cfg.instances.task, source=source)
    return text, info


def check_side_files(cfg: PreprocessConfig) -> None:
    """Files the run writes besides the dataset, checked before it starts: a typo'd
    ``dedup.write_clusters`` would otherwise fail after the whole pipeline ran."""
    if cfg.dedup.near_duplicates and cfg.dedup.write_clusters:
        try:
            storage.check_writable(cfg.dedup.write_clusters)
        except StorageError as exc:
            raise ConfigError(f"dedup.write_clusters: {exc.args[0]}") from None


def resolve_labels(cfg: PreprocessConfig) -> list[str] | None:
    """The fixed label list of a classification task, if the config gives or borrows one."""
    if cfg.labels.names is not None:
        return list(cfg.labels.names)
    if cfg.labels.from_dataset:
        manifest = Manifest.load(cfg.labels.from_dataset)
        if not manifest.labels:
            raise ConfigError(f"{cfg.labels.from_dataset}: has no label list to reuse (task {manifest.task!r}); "
                              "--labels-from needs a classification dataset")
        return manifest.labels
    return None
