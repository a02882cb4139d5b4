"""The preprocessing driver: check everything that can be checked up front, then run Beam.

Order matters for a clean failure story: inputs are listed (a missing glob fails in a second,
not after an hour), the output is checked, the tokenizer is loaded or trained and checked
against the task, labels are resolved; only then does the run take the output's writer lease
and write anything. An old dataset at the output stays readable and valid until the
pipeline's last step publishes the new manifest over it; a run that fails removes what it
wrote (``mlm_data.dataset.publication``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from mlm_data import lifetime, scratch
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset import publication
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.schema import LABELLED_TASKS, id_type_for
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading.document_reader import Document, InputFile, list_input_files, read_documents
from mlm_data.text.cleaning import clean_text
from mlm_data.text.tokenizer import (
    TokenizerInfo,
    describe,
    parse_tokenizer,
    read_tokenizer_text,
    require_specials,
    train_wordpiece,
)
from pipelines.document_stages import PrepareDocuments
from pipelines.labelled_stages import CreateLabelledRowsFn, PrepareLabelled
from pipelines.quality import QualityStages
from pipelines.read import ReadDocuments
from pipelines.runner import (
    describe_runner,
    make_runner,
    pipeline_options,
    runner_keeps_finish_bundle_output,
    runs_on_this_machine,
)
from pipelines.write import CreateInstancesFn, WriteDataset, recorded_config

log = logging.getLogger(__name__)

#: Bytes of shard per byte of input text: ~4 characters per token, 2 bytes per uint16 id,
#: plus word-start bits and offsets. Only used to pick a bucket count.
_SHARD_BYTES_PER_TEXT_BYTE = 0.6
_COMPRESSED_EXPANSION = 4.0


@dataclass(frozen=True)
class BucketPlan:
    num_buckets: int
    validation_buckets: int
    estimated_text_bytes: int


def plan_buckets(cfg: PreprocessConfig, files: Sequence[InputFile], vocab_size: int) -> BucketPlan:
    """Bucket counts from the config, or from the input size so a bucket fills about one shard.

    Depends only on file sizes and the config, so every runner and worker count agrees.
    """
    text_bytes = 0
    for f in files:
        compressed = f.name.endswith((".gz", ".zst", ".zstd", ".parquet"))
        text_bytes += int(f.size * (_COMPRESSED_EXPANSION if compressed else 1.0))
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


def training_texts(cfg: PreprocessConfig, files: Sequence[InputFile]) -> list[str]:
    """Cleaned document texts for tokenizer training, in id order, up to the sample size."""
    texts: list[str] = []
    budget = cfg.tokenizer.train_sample_bytes
    for f in files:
        for item in read_documents(f, cfg.input, max_document_chars=cfg.clean.max_document_chars):
            if not isinstance(item, Document):
                continue
            text = clean_text(item.text, normalization=cfg.clean.unicode_normalization,
                              remove_control_chars=cfg.clean.remove_control_chars)
            texts.append(text)
            budget -= len(text)
            if budget <= 0:
                return texts
    return texts


def resolve_tokenizer(cfg: PreprocessConfig, files: Sequence[InputFile], *,
                      echo: Callable[[str], None]) -> tuple[str, TokenizerInfo]:
    if not cfg.tokenizer.path and cfg.instances.task in LABELLED_TASKS:
        raise ConfigError(f"tokenizer.path: task {cfg.instances.task!r} needs the tokenizer of the model you will "
                          "fine-tune; pass --tokenizer (e.g. the pretraining dataset's tokenizer-<hash>.json)")
    if cfg.tokenizer.path:
        text = read_tokenizer_text(cfg.tokenizer.path)
        source = cfg.tokenizer.path
    else:
        started = time.perf_counter()
        texts = training_texts(cfg, files)
        if not texts:
            raise InputError(f"{', '.join(cfg.input.paths)}: no documents to train a tokenizer on")
        text = train_wordpiece(texts, vocab_size=cfg.tokenizer.vocab_size, lowercase=cfg.tokenizer.lowercase)
        source = "trained tokenizer"
        echo(f"trained a WordPiece tokenizer ({cfg.tokenizer.vocab_size} entries max) on "
             f"{len(texts)} documents in {time.perf_counter() - started:.1f}s")
    tok = parse_tokenizer(text, source=source)
    info = describe(tok, text)
    require_specials(info, cfg.instances.task, source=source)
    return text, info


def resolve_labels(cfg: PreprocessConfig) -> list[str] | None:
    """The fixed label list of a classification task, if the config gives or borrows one."""
    if cfg.labels.names is not None:
        return list(cfg.labels.names)
    if cfg.labels.from_dataset:
        labels = Manifest.load(cfg.labels.from_dataset).labels
        if not labels:
            raise ConfigError(f"{cfg.labels.from_dataset}: has no label list to reuse (task "
                              f"{Manifest.load(cfg.labels.from_dataset).task!r}); --labels-from needs a "
                              "classification dataset")
        return labels
    return None


def run(cfg: PreprocessConfig, *, beam_args: Sequence[str] = (), echo: Callable[[str], None] = log.info) -> Manifest:
    """Preprocess ``cfg.input`` into a dataset at ``cfg.output.path`` and return its manifest."""
    cfg.require_paths(source="preprocess")
    root: str = cfg.output.path  # type: ignore[assignment]
    files = list_input_files(cfg.input.paths)
    publication.check_output(root, overwrite=cfg.output.overwrite)
    tokenizer_json, info = resolve_tokenizer(cfg, files, echo=echo)
    fixed_labels = resolve_labels(cfg)
    plan = plan_buckets(cfg, files, info.vocab_size)
    id_type = id_type_for(info.vocab_size)
    options = pipeline_options(beam_args)
    with publication.replacing(root, overwrite=cfg.output.overwrite, command="mlm-data preprocess",
                               echo=echo) as output:
        tokenizer_url = publication.write_tokenizer(root, tokenizer_json)
        echo(f"{len(files)} input files, ~{plan.estimated_text_bytes / 1e6:.1f} MB of text → {plan.num_buckets} "
             f"train bucket(s){f' + {plan.validation_buckets} validation' if plan.validation_buckets else ''}; "
             f"runner {describe_runner(options)}")
        started = time.perf_counter()
        # Local runners hold GroupByKey data in memory; spill it to scratch files instead.
        spill_dir = scratch.make_dir("mlm-data-shuffle-") if runs_on_this_machine(options) else None
        try:
            with lifetime.as_driver():
                _run_pipeline(cfg, options, files=files, info=info, tokenizer_url=tokenizer_url, plan=plan,
                              id_type=id_type, fixed_labels=fixed_labels, spill_dir=spill_dir, output=output)
        finally:
            if spill_dir:
                shutil.rmtree(spill_dir, ignore_errors=True)
        manifest = output.published(config=recorded_config(cfg), tokenizer_sha256=info.sha256)
    echo(f"wrote {manifest.data['totals']['num_rows']} rows in {manifest.data['totals']['num_shards']} shard(s) "
         f"to {root} in {time.perf_counter() - started:.1f}s")
    return manifest


def _run_pipeline(cfg: PreprocessConfig, options: PipelineOptions, *, files: Sequence[InputFile], info: TokenizerInfo,
                  tokenizer_url: str, plan: BucketPlan, id_type: pa.DataType, fixed_labels: list[str] | None,
                  spill_dir: str | None, output: publication.Output) -> None:
    with beam.Pipeline(runner=make_runner(options), options=options) as p:
        batches = p | "ReadDocuments" >> ReadDocuments(files, cfg.input, cfg.clean.max_document_chars,
                                                       cfg.instances.task)
        if cfg.instances.task in LABELLED_TASKS:
            keyed, summaries, labels = batches | "PrepareLabelled" >> PrepareLabelled(
                cfg, info, tokenizer_url=tokenizer_url, num_buckets=plan.num_buckets,
                validation_buckets=plan.validation_buckets, fixed_labels=fixed_labels, spill_dir=spill_dir)
            create_rows: beam.DoFn = CreateLabelledRowsFn(cfg, info)
        else:
            batches = batches | "Quality" >> QualityStages(cfg, spill_dir=spill_dir)
            keyed, summaries = batches | "PrepareDocuments" >> PrepareDocuments(
                clean=cfg.clean, tokenizer_url=tokenizer_url, tokenizer_sha256=info.sha256,
                num_buckets=plan.num_buckets, validation_buckets=plan.validation_buckets,
                validation_fraction=cfg.output.validation_fraction, id_type=id_type,
                overlap_tokenization=runner_keeps_finish_bundle_output(options), spill_dir=spill_dir)
            labels = p | "NoLabels" >> beam.Create([None])
            create_rows = CreateInstancesFn(cfg, info)
        _ = (keyed, summaries) | "WriteDataset" >> WriteDataset(
            cfg, info, num_files=len(files), id_type=id_type, create_rows=create_rows, labels=labels,
            lease=output.ticket)

