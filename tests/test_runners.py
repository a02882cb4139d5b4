"""The same dataset from every Beam runner that works here, and exactly once under retries.

Runners, each named explicitly (Beam 2.77's default ``DirectRunner`` first tries the Prism
runner, which downloads a binary; ``pipelines.runner`` maps the local names to the in-process
Fn API runner instead):

- in-process Fn API runner (``--runner DirectRunner --direct_running_mode in_memory``): the
  reference every other runner is compared with;
- multi-processing DirectRunner: covered by
  ``test_pipeline.py::test_byte_identical_across_runners_and_reruns``;
- ``BundleBasedDirectRunner``, which retries a failed bundle: a bundle that fails after writing
  its shard, and one that fails after publishing the manifest, are retried and the dataset is
  still exactly the reference, each shard once;
- Beam's ``DaskRunner`` on a ``dask.distributed.LocalCluster`` with two worker processes: a
  second real engine, which must produce the reference manifest and shard hashes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from mlm_data import storage
from mlm_data.dataset import publication
from mlm_data.dataset.manifest import Manifest
from pipelines.runner import (
    describe_runner,
    make_runner,
    pipeline_options,
    runner_keeps_finish_bundle_output,
)

from conftest import demo_documents, write_corpus

KW = {"output.num_buckets": 3, "output.validation_fraction": 0.1, "output.bucket_memory_mb": 1}  # several windows
IN_PROCESS = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory"]
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def dataset_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(small_corpus: Path, preprocess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("in-process")
    manifest = preprocess(str(small_corpus), root, beam_args=IN_PROCESS, **KW)
    return manifest, dataset_files(root)


@pytest.mark.parametrize(("argv", "expected"), [
    ([], FnApiRunner),
    (IN_PROCESS, FnApiRunner),
    (["--runner", "FnApiRunner"], FnApiRunner),
    (["--runner", "BundleBasedDirectRunner"], BundleBasedDirectRunner),
])
def test_local_runner_names_map_to_runner_instances(argv, expected):
    assert isinstance(make_runner(PipelineOptions(argv)), expected)


def test_other_runner_names_pass_through_to_beam():
    options = PipelineOptions(["--runner", DASK_RUNNER, "--dask_client_address", "127.0.0.1:1"])
    assert make_runner(options) == DASK_RUNNER
    assert not runner_keeps_finish_bundle_output(options)
    assert make_runner(PipelineOptions(["--runner", "DataflowRunner"])) == "DataflowRunner"
    assert describe_runner(PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])) \
        == "DirectRunner (mode=multi_processing, workers=2)"


def test_dask_gets_one_input_file_per_partition_unless_told_otherwise():
    # Beam's DaskRunner otherwise packs >= 128 Create elements (our input files) into one
    # partition, which runs on one worker however many there are.
    dask_options = pytest.importorskip("apache_beam.runners.dask.dask_runner").DaskOptions
    assert pipeline_options(["--runner", DASK_RUNNER]).view_as(dask_options).partition_size == 1
    chosen = pipeline_options(["--runner", DASK_RUNNER, "--dask_npartitions", "7"]).view_as(dask_options)
    assert chosen.npartitions == 7 and chosen.partition_size is None
    assert pipeline_options([]).view_as(dask_options).partition_size is None


def test_retried_bundles_write_each_shard_exactly_once(tmp_path, small_corpus, preprocess, reference, monkeypatch):
    ref_manifest, ref_files = reference
    victim = ref_manifest.shards_for("train")[1].path
    calls: Counter[str] = Counter()
    real_publish, real_write_manifest = storage.publish_file, publication.write_manifest

    def publish_shard_then_fail_once(local_path, url):
        real_publish(local_path, url)
        rel_path = url.split("/out/", 1)[1]
        calls[rel_path] += 1
        if rel_path == victim and calls[rel_path] == 1:
            raise RuntimeError(f"injected: worker lost after writing {rel_path}")

    def write_manifest_then_fail_once(root, data):
        real_write_manifest(root, data)
        calls["manifest.json"] += 1
        if calls["manifest.json"] == 1:
            raise RuntimeError("injected: worker lost after publishing the manifest")

    monkeypatch.setattr(storage, "publish_file", publish_shard_then_fail_once)
    monkeypatch.setattr(publication, "write_manifest", write_manifest_then_fail_once)
    manifest = preprocess(str(small_corpus), tmp_path / "out", beam_args=["--runner", "BundleBasedDirectRunner"],
                          **KW)

    assert calls[victim] == 2 and calls["manifest.json"] == 2   # both bundles really were retried
    assert dataset_files(tmp_path / "out") == ref_files          # ... and the result is exactly once
    paths = [s.path for s in manifest.shards]
    assert len(paths) == len(set(paths)) == len(ref_manifest.shards)
    assert manifest.data == ref_manifest.data


def test_dask_runner_on_two_worker_processes_matches_in_process(tmp_path, preprocess, dask_scheduler):
    # Dask runs this pipeline ~20x slower than the Fn API runner: a smaller corpus, still in
    # several files and buckets, with a validation split.
    docs = demo_documents(24)
    corpus = write_corpus(tmp_path / "in", [docs[:10], docs[10:18], docs[18:]], names=["a.txt", "b.txt.gz", "c.txt"])
    kw = {"output.num_buckets": 2, "output.validation_fraction": 0.1}
    ref_manifest = preprocess(str(corpus), tmp_path / "in-process", beam_args=IN_PROCESS, **kw)
    ref_files = dataset_files(tmp_path / "in-process")
    assert len(ref_manifest.shards) == 3
    manifest = preprocess(str(corpus), tmp_path / "dask", beam_args=[
        "--runner", DASK_RUNNER, "--dask_client_address", dask_scheduler], **kw)
    assert manifest.data == ref_manifest.data
    assert [(s.path, s.sha256) for s in manifest.shards] == [(s.path, s.sha256) for s in ref_manifest.shards]
    assert dataset_files(tmp_path / "dask") == ref_files
