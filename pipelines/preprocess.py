"""The preprocessing driver: list inputs → resolve → build the graph → run.

Order matters for a clean failure story: inputs are listed (a missing glob fails in a second,
not after an hour), the output is checked, the tokenizer is loaded or trained and checked
against the task, labels are resolved; only then does the run take the output's writer lease
and write anything. An old dataset at the output stays readable and valid until the
pipeline's last step publishes the new manifest over it; a run that fails removes what it
wrote (``mlm_data.dataset.publication``). Every decision is made by the core
(``mlm_data.stages.plan``); this module only wires Beam.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from mlm_data import lifetime, scratch
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.console import write_stderr
from mlm_data.dataset import publication
from mlm_data.dataset.assemble import recorded_config
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.schema import LABELLED_TASKS, id_type_for
from mlm_data.instances.donors import DonationConfig
from mlm_data.progress import ProgressSettings, RunSize
from mlm_data.reading.input_files import InputFile, Inputs, inputs_of, list_input_files
from mlm_data.stages.plan import (
    BucketPlan,
    check_side_files,
    plan_buckets,
    resolve_labels,
    resolve_tokenizer,
)
from mlm_data.text.tokenizer import TokenizerInfo
from pipelines.document_stages import PrepareDocuments
from pipelines.labelled_stages import PrepareLabelled, WriteLabelledBucketFn
from pipelines.progress import run_pipeline
from pipelines.quality import QualityStages
from pipelines.read import ReadDocuments
from pipelines.runner import (
    describe_runner,
    make_runner,
    pipeline_options,
    runner_keeps_finish_bundle_output,
    runs_on_this_machine,
)
from pipelines.write import WriteDataset, WriteDocumentBucketFn

log = logging.getLogger(__name__)


def run(cfg: PreprocessConfig, *, beam_args: Sequence[str] = (), echo: Callable[[str], None] = log.info,
        progress: ProgressSettings | None = None) -> Manifest:
    """Preprocess ``cfg.input`` into a dataset at ``cfg.output.path`` and return its manifest.

    With ``progress``, a line says what the run is doing every ``progress.interval`` seconds
    (``pipelines.progress``)."""
    cfg.require_paths(source="preprocess")
    root: str = cfg.output.path  # type: ignore[assignment]
    files = list_input_files(cfg.input.paths)
    inputs = inputs_of(cfg.input.paths, files)
    publication.check_output(root, overwrite=cfg.output.overwrite)
    check_side_files(cfg)
    tokenizer_json, info = resolve_tokenizer(cfg, files, echo=echo, progress=progress, write=write_stderr)
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
        # Local workers report progress through files there (see pipelines.progress).
        progress_dir = os.path.join(spill_dir, "progress") if spill_dir and progress else None
        if progress_dir:
            os.mkdir(progress_dir)
        size = RunSize(files=len(files), text_bytes=plan.estimated_text_bytes,
                       buckets=plan.num_buckets + plan.validation_buckets)
        try:
            with lifetime.as_driver():
                _run_pipeline(cfg, options, files=files, inputs=inputs, info=info, tokenizer_url=tokenizer_url,
                              plan=plan, id_type=id_type, fixed_labels=fixed_labels, spill_dir=spill_dir,
                              output=output, progress_dir=progress_dir,
                              run=lambda p: run_pipeline(p, progress, size, directory=progress_dir, emit=echo,
                                                         write=write_stderr))
        finally:
            if spill_dir:
                shutil.rmtree(spill_dir, ignore_errors=True)
        manifest = output.published(config=recorded_config(cfg, inputs), tokenizer_sha256=info.sha256)
    echo(f"wrote {manifest.data['totals']['num_rows']} rows in {manifest.data['totals']['num_shards']} shard(s) "
         f"to {root} in {time.perf_counter() - started:.1f}s")
    return manifest


def _run_pipeline(cfg: PreprocessConfig, options: PipelineOptions, *, files: Sequence[InputFile], inputs: Inputs,
                  info: TokenizerInfo, tokenizer_url: str, plan: BucketPlan, id_type: pa.DataType,
                  fixed_labels: list[str] | None, spill_dir: str | None, output: publication.Output,
                  progress_dir: str | None, run: Callable[[beam.Pipeline], None]) -> None:
    id_itemsize = np.dtype(id_type.to_pandas_dtype()).itemsize
    p = beam.Pipeline(runner=make_runner(options), options=options)
    batches = p | "ReadDocuments" >> ReadDocuments(files, cfg.input, cfg.clean.max_document_chars,
                                                   cfg.instances.task, progress_dir=progress_dir)
    labels: beam.PCollection | None = None
    if cfg.instances.task in LABELLED_TASKS:
        keyed, summaries, labels = batches | "PrepareLabelled" >> PrepareLabelled(
            cfg, info, tokenizer_url=tokenizer_url, num_buckets=plan.num_buckets,
            validation_buckets=plan.validation_buckets, fixed_labels=fixed_labels, spill_dir=spill_dir)
        write_bucket: beam.DoFn = WriteLabelledBucketFn(cfg, info, id_itemsize=id_itemsize, progress_dir=progress_dir)
    else:
        batches = batches | "Quality" >> QualityStages(cfg, spill_dir=spill_dir)
        keyed, summaries = batches | "PrepareDocuments" >> PrepareDocuments(
            clean=cfg.clean, tokenizer_url=tokenizer_url, tokenizer_sha256=info.sha256,
            num_buckets=plan.num_buckets, validation_buckets=plan.validation_buckets,
            validation_fraction=cfg.output.validation_fraction, id_type=id_type,
            donations=DonationConfig(cfg.seed, cfg.instances.max_seq_length) if cfg.instances.task == "mlm_nsp" else None,
            overlap_tokenization=runner_keeps_finish_bundle_output(options), spill_dir=spill_dir,
            progress_dir=progress_dir)
        write_bucket = WriteDocumentBucketFn(cfg, info, id_itemsize=id_itemsize, progress_dir=progress_dir)
    _ = (keyed, summaries) | "WriteDataset" >> WriteDataset(
        cfg, info, inputs=inputs, id_type=id_type, write_bucket=write_bucket, labels=labels, lease=output.ticket)
    run(p)
