"""The Beam shell only wires: a transform under TestPipeline, DoFns and configs surviving what a
runner does to them (pickling, then ``setup``), and the Beam-free parts running without Beam."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.internal import pickler
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline as beam_testing
from apache_beam.testing.util import assert_that, equal_to

import mlm_data.config.preprocess
import pipelines.document_stages
import pipelines.labelled_stages
import pipelines.near_dedup
import pipelines.quality
import pipelines.read
import pipelines.write
import trainer.config
import trainer.loading.options
from mlm_data.config.loading import load
from mlm_data.config.preprocess import CleanConfig, InputConfig, PreprocessConfig
from mlm_data.instances.donors import DonationConfig
from mlm_data.reading.document_reader import Document
from mlm_data.reading.input_files import InputFile, inputs_of
from mlm_data.stages.batches import Batch
from mlm_data.text.tokenizer import describe, parse_tokenizer
from pipelines.document_stages import AssignBucketsFn, CleanAndSplitFn, TokenizeFn
from pipelines.labelled_stages import EncodeLabelledFn, RouteLabelledFn, WriteLabelledBucketFn
from pipelines.near_dedup import ApplyDropsFn, SignFn, StoreBatchFn, VerifyBucketFn, WriteClustersFn
from pipelines.quality import CleanFn, FilterFn
from pipelines.read import ReadFileFn
from pipelines.write import WriteDocumentBucketFn, WriteManifestFn

from conftest import REPO, TOKENIZER, demo_documents

#: How a runner ships a DoFn to its workers: the standard library's pickle, and Beam's own
#: pickler (what Dataflow uses; cloudpickle by default).
ROUND_TRIPS = {"pickle": (pickle.dumps, pickle.loads), "beam": (pickler.dumps, pickler.loads)}


def test_clean_and_split_under_test_pipeline():
    docs = [
        Document("a.txt#0", "First sentence here. Second one follows."),
        Document("a.txt#1", " \u200b "),           # nothing left once format characters go
        Document("a.txt#2", "Tiny."),              # below clean.min_document_chars
    ]
    with beam_testing.TestPipeline(runner=FnApiRunner()) as p:
        out = (
            p
            | beam.Create([Batch(items=docs)])
            | beam.ParDo(CleanAndSplitFn(CleanConfig(min_document_chars=10)))
            | beam.Map(lambda b: ([(d.id, d.sentences) for d in b.items], dict(b.counts.dropped)))
        )
        assert_that(out, equal_to([
            ([("a.txt#0", ["First sentence here.", "Second one follows."])],
             {"empty": 1, "document_too_short": 1}),
        ]))


@pytest.fixture(scope="module")
def tokenizer_info():
    text = TOKENIZER.read_text(encoding="utf-8")
    return describe(parse_tokenizer(text, source=str(TOKENIZER)), text)


def dofns(info, tmp: Path) -> dict[str, beam.DoFn]:
    cfg = dataclasses.replace(PreprocessConfig(), input=InputConfig(paths=(str(tmp),), text_field="body"))
    labelled = dataclasses.replace(cfg, instances=dataclasses.replace(cfg.instances, task="sequence_classification"))
    route = dict(num_buckets=3, validation_buckets=1, validation_fraction=0.1)
    return {
        "ReadFileFn": ReadFileFn(cfg.input, 1000, "mlm_nsp", progress_dir=str(tmp)),
        "CleanAndSplitFn": CleanAndSplitFn(cfg.clean),
        "TokenizeFn": TokenizeFn(str(TOKENIZER), info.sha256, progress_dir=str(tmp)),
        "AssignBucketsFn": AssignBucketsFn(**route, id_type=pa.uint16(), donations=DonationConfig(cfg.seed, 128),
                                           spill_dir=str(tmp)),
        "EncodeLabelledFn": EncodeLabelledFn(labelled, str(TOKENIZER), info.sha256, cls_id=2, sep_id=3),
        "RouteLabelledFn": RouteLabelledFn(**route, spill_dir=None),
        "WriteLabelledBucketFn": WriteLabelledBucketFn(labelled, info, id_itemsize=2, progress_dir=str(tmp)),
        "WriteDocumentBucketFn": WriteDocumentBucketFn(cfg, info, id_itemsize=2, progress_dir=str(tmp)),
        "WriteManifestFn": WriteManifestFn(cfg, info, inputs=inputs_of([str(tmp)], []), id_dtype="uint16", lease=None),
        "FilterFn": FilterFn(cfg.filters, cfg.clean),
        "CleanFn": CleanFn(cfg.clean),
        "SignFn": SignFn(cfg.dedup, cfg.clean, cfg.seed, str(tmp)),
        "VerifyBucketFn": VerifyBucketFn(0.8, 128),
        "StoreBatchFn": StoreBatchFn(None),
        "ApplyDropsFn": ApplyDropsFn(),
        "WriteClustersFn": WriteClustersFn(str(tmp / "clusters.jsonl")),
    }


def test_every_dofn_is_covered(tmp_path, tokenizer_info):
    modules = (pipelines.read, pipelines.quality, pipelines.near_dedup, pipelines.document_stages,
               pipelines.labelled_stages, pipelines.write)
    defined = {name for module in modules for name, value in vars(module).items()
               if isinstance(value, type) and issubclass(value, beam.DoFn) and value.__module__ == module.__name__}
    assert defined == set(dofns(tokenizer_info, tmp_path))


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_dofns_survive_pickling_and_set_up_on_the_other_side(tmp_path, tokenizer_info, how):
    dumps, loads = ROUND_TRIPS[how]
    for name, fn in dofns(tokenizer_info, tmp_path).items():
        copy = loads(dumps(fn))
        assert type(copy) is type(fn) and vars(copy) == vars(fn), name
    # A copy works as the original does: set up (the tokenizer is loaded and hash-checked on
    # the worker), then process.
    fns = dofns(tokenizer_info, tmp_path)
    clean, tokenize = loads(dumps(fns["CleanAndSplitFn"])), loads(dumps(fns["TokenizeFn"]))
    docs = [Document(f"d#{i}", text) for i, text in enumerate(demo_documents(3))]
    split = next(clean.process(Batch(items=docs)))
    tokenize._overlap = False
    tokenize.setup()
    try:
        tokenized = next(tokenize.process(split)).items
    finally:
        tokenize.teardown()
    assert tokenized.doc_ids == ("d#0", "d#1", "d#2") and len(tokenized.ids) > 100


def all_configs() -> list[object]:
    configs = []
    for module in (mlm_data.config.preprocess, trainer.config, trainer.loading.options):
        for value in vars(module).values():
            if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module.__name__:
                configs.append(value())
    return configs


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
@pytest.mark.parametrize("config", all_configs(), ids=lambda c: type(c).__name__)
def test_configs_survive_pickling(config, how):
    dumps, loads = ROUND_TRIPS[how]
    copy = loads(dumps(config))
    assert type(copy) is type(config) and copy == config


def test_a_config_from_a_file_survives_pickling():
    cfg = load(PreprocessConfig, str(REPO / "configs" / "finetune" / "ner.yaml"), settings={"seed": 7})
    for dumps, loads in ROUND_TRIPS.values():
        assert loads(dumps(cfg)) == cfg


def test_train_tokenizer_never_imports_beam(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(demo_documents(20)), encoding="utf-8")
    code = (
        "import sys\n"
        "sys.modules['apache_beam'] = None  # any import of Beam now fails\n"
        "from pipelines.cli import main\n"
        f"code = main(['train-tokenizer', '--input', {str(corpus)!r}, '--output', {str(tmp_path / 'tok.json')!r},"
        " '--vocab-size', '500'])\n"
        "assert code == 0, code\n"
        "assert not [m for m in sys.modules if m.startswith('apache_beam.')], 'Beam was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and (tmp_path / "tok.json").stat().st_size > 1000


def test_input_file_is_what_crosses_to_workers():
    file = InputFile("/data/a.txt", "a.txt", 12)
    for dumps, loads in ROUND_TRIPS.values():
        assert loads(dumps(file)) == file
