"""`output.ipc_format`: stream shards (HF `datasets`) and file shards (pyarrow.dataset, polars,
pandas, DuckDB) hold the same rows, and every reader of the project takes both."""

from __future__ import annotations

import json
import shutil

import datasets
import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pds
import pytest

from mlm_data.config.loading import load
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset.inspection import render, summarize, verify
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.shards import decode_table
from mlm_data.errors import ConfigError, DatasetError
from trainer.loading.loader import DataSource, ShardLoader

from test_loader_support import take


@pytest.fixture(scope="module")
def both(tmp_path_factory, small_corpus, preprocess):
    """The same corpus written once per IPC framing."""
    out = {}
    for fmt in ("stream", "file"):
        root = tmp_path_factory.mktemp(f"ipc-{fmt}") / "ds"
        preprocess(str(small_corpus), root, **{"output.num_buckets": 3, "output.ipc_format": fmt,
                                                "output.validation_fraction": 0.1})
        out[fmt] = root
    return out


def _train_files(root):
    return sorted(str(p) for p in (root / "train").glob("*.arrow"))


def test_the_manifest_records_the_framing_and_both_hold_the_same_rows(both):
    stream, file = (Manifest.load(str(both[f])) for f in ("stream", "file"))
    assert (stream.ipc_format, file.ipc_format) == ("stream", "file")
    # Shards are named by their content: the same bucket and part, different bytes and hashes.
    assert [s.path.rsplit("-", 1)[0] for s in stream.shards] == [s.path.rsplit("-", 1)[0] for s in file.shards]
    for a, b in zip(stream.shards, file.shards):
        raw_a, raw_b = (both["stream"] / a.path).read_bytes(), (both["file"] / b.path).read_bytes()
        assert raw_b[:6] == b"ARROW1" and raw_a[:6] != b"ARROW1"
        assert decode_table(raw_a, source=a.path).equals(decode_table(raw_b, source=b.path))
        assert a.num_rows == b.num_rows and a.num_tokens == b.num_tokens


def test_file_shards_open_in_the_arrow_tools_people_use(both):
    root = both["file"]
    rows = Manifest.load(str(root)).data["splits"]["train"]["num_rows"]
    dataset = pds.dataset(str(root / "train"), format="arrow")
    assert dataset.count_rows() == rows
    assert pl.scan_ipc(str(root / "train" / "*.arrow")).select(pl.len()).collect().item() == rows
    assert sum(len(pd.read_feather(f)) for f in _train_files(root)) == rows
    count, = duckdb.sql("select count(*) from dataset").fetchall()[0]
    assert count == rows


def test_stream_shards_open_with_ipc_streams_and_hf_datasets(both):
    root = both["stream"]
    rows = Manifest.load(str(root)).data["splits"]["train"]["num_rows"]
    files = _train_files(root)
    assert sum(pa.ipc.open_stream(f).read_all().num_rows for f in files) == rows
    assert sum(len(datasets.Dataset.from_file(f)) for f in files) == rows
    assert sum(pl.read_ipc_stream(f).height for f in files) == rows
    assert sum(len(pa.ipc.open_stream(f).read_pandas()) for f in files) == rows
    shard = pa.ipc.open_stream(files[0]).read_all()
    assert duckdb.sql("select count(*) from shard").fetchall() == [(shard.num_rows,)]


@pytest.mark.parametrize("fmt", ["stream", "file"])
def test_hf_load_dataset_reads_either_framing(both, fmt, tmp_path):
    root = both[fmt]
    rows = Manifest.load(str(root)).data["splits"]["train"]["num_rows"]
    by_files = datasets.load_dataset("arrow", data_files={"train": _train_files(root)}, split="train",
                                     cache_dir=str(tmp_path / "hf"))
    by_dir = datasets.load_dataset(str(root), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(by_files) == len(by_dir) == rows


def test_verify_inspect_and_the_loader_take_file_shards(both):
    manifests = {f: Manifest.load(str(both[f])) for f in ("stream", "file")}
    report = verify(manifests["file"], progress=None)
    assert report.ok and report.checked == len(manifests["file"].shards)
    assert "mlm_nsp" in render(summarize(manifests["file"]))

    def batches(fmt):
        loader = ShardLoader([DataSource(str(both[fmt]))], batch_size=8, seed=7)
        return take(iter(loader), 6)

    for a, b in zip(batches("stream"), batches("file"), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def test_an_unknown_framing_in_a_manifest_is_refused(both, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(both["file"], copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["ipc_format"] = "parquet"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="unknown shard ipc_format 'parquet'; this mlm-data reads stream and file"):
        Manifest.load(str(copy))


def test_an_unknown_framing_in_the_config_is_a_config_error():
    with pytest.raises(ConfigError, match=r"output\.ipc_format: 'feather' is not allowed; expected one of "
                                          r"'stream', 'file'"):
        load(PreprocessConfig, settings={"output.ipc_format": "feather"})
