"""What is decided before the pipeline runs: the input's text size (from metadata only) and the
bucket plan made from it."""

from __future__ import annotations

import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mlm_data.config.loading import load
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.reading import text_size
from mlm_data.reading.input_files import list_input_files
from mlm_data.reading.text_size import estimate_text_bytes
from mlm_data.stages.plan import plan_buckets, text_columns

from conftest import demo_documents

TEXT = "\n\n".join(demo_documents(40)).encode()


def estimate(path, fmt="auto", columns=("text",)):
    return estimate_text_bytes(list_input_files([str(path)]), fmt=fmt, columns=list(columns))


@pytest.mark.parametrize("codec", ["snappy", "zstd", "gzip", "none"])
def test_parquet_counts_the_configured_columns_uncompressed(tmp_path, codec):
    docs = demo_documents(40)
    text_bytes = sum(len(d.encode()) for d in docs)
    table = pa.table({"text": docs, "other": [d[::-1] for d in docs], "n": list(range(len(docs)))})
    pq.write_table(table, tmp_path / "p.parquet", compression=codec, use_dictionary=False)
    got = estimate(tmp_path / "p.parquet")
    assert text_bytes <= got <= text_bytes * 1.02  # the text and its 4-byte lengths, not the other columns
    assert estimate(tmp_path / "p.parquet", columns=("text", "other")) > 1.9 * text_bytes


def test_gzip_uses_the_size_in_its_trailer(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(TEXT))
    assert os.path.getsize(tmp_path / "a.txt.gz") < len(TEXT) / 2
    assert estimate(tmp_path / "a.txt.gz") == len(TEXT)


def test_zstd_uses_the_frame_content_size_when_recorded(tmp_path):
    (tmp_path / "a.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(TEXT))
    assert estimate(tmp_path / "a.txt.zst") == len(TEXT)
    streamed = zstandard.ZstdCompressor().compressobj()
    (tmp_path / "b.txt.zst").write_bytes(streamed.compress(TEXT) + streamed.flush())  # no content size
    size = os.path.getsize(tmp_path / "b.txt.zst")
    assert estimate(tmp_path / "b.txt.zst") == int(size * text_size.DEFAULT_EXPANSION["zstd"])


def test_files_without_a_usable_size_take_the_ratio_of_those_with_one(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(TEXT))
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(os.urandom(5000)))  # ISIZE < stored size: not trusted
    (tmp_path / "c.txt").write_bytes(TEXT)
    ratio = len(TEXT) / os.path.getsize(tmp_path / "a.txt.gz")
    expected = len(TEXT) + int(os.path.getsize(tmp_path / "b.txt.gz") * ratio) + len(TEXT)
    assert estimate(tmp_path) == expected


def test_only_a_few_files_of_a_kind_are_probed(tmp_path, monkeypatch):
    for i in range(7):
        (tmp_path / f"{i}.txt.gz").write_bytes(gzip.compress(TEXT[i * 1000:]))
    probed = []

    def probe(file):
        probed.append(file.name)
        return text_size._gzip_size(file)

    monkeypatch.setattr(text_size, "MAX_PROBES", 3)
    monkeypatch.setitem(text_size._PROBES, "gzip", probe)
    got = estimate(tmp_path)
    assert probed == ["0.txt.gz", "3.txt.gz", "6.txt.gz"]  # spread over the sorted list
    assert abs(got - sum(len(TEXT[i * 1000:]) for i in range(7))) < 0.02 * got
    assert estimate(tmp_path) == got  # and the same every time


def test_the_plan_sizes_buckets_from_the_text_not_the_stored_bytes(tmp_path):
    docs = demo_documents(120)
    pq.write_table(pa.table({"body": docs, "other": docs}), tmp_path / "p.parquet")
    cfg = load(PreprocessConfig, settings={"input.paths": [str(tmp_path)], "input.text_field": "body",
                                        "output.target_shard_bytes": 64 * 1024})
    assert text_columns(cfg) == ["body"]
    plan = plan_buckets(cfg, list_input_files(cfg.input.paths), vocab_size=30522)
    text_bytes = sum(len(d.encode()) for d in docs)
    assert text_bytes <= plan.estimated_text_bytes <= 1.02 * text_bytes
    assert plan.num_buckets == -(-int(plan.estimated_text_bytes * 0.6) // (64 * 1024))


def test_labelled_tasks_count_their_text_and_label_columns():
    cfg = load(PreprocessConfig, settings={"instances.task": "sequence_classification", "input.text_field": "s1",
                                        "input.text_pair_field": "s2", "input.label_field": "gold"})
    assert text_columns(cfg) == ["s1", "s2", "gold"]
    cfg = load(PreprocessConfig, settings={"instances.task": "token_classification", "instances.max_seq_length": 64,
                                        "labels.stride": 8})
    assert text_columns(cfg) == ["tokens", "tags"]
