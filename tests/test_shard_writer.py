"""Streaming a bucket's rows into shards: sizes, layout, checksums and cleanup on failure."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pyarrow as pa
import pytest

from mlm_data import storage
from mlm_data.dataset.shard_writer import ShardWriter
from mlm_data.dataset.shards import ROWS_PER_BATCH, list_array


def rows(n: int, *, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 129, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, 30000, size=int(offsets[-1])).astype(np.uint16)
    table = pa.table({"input_ids": list_array(ids, offsets, pa.uint16()), "row": pa.array(np.arange(n))})
    return table, lengths


@pytest.mark.parametrize("ipc_format", ["stream", "file"])
def test_rows_arriving_in_pieces_make_shards_of_the_target_size(tmp_path, ipc_format):
    table, lengths = rows(30000)
    target = 1 << 20
    with ShardWriter(str(tmp_path), split="train", bucket=3, target_bytes=target, id_itemsize=2,
                     ipc_format=ipc_format) as writer:
        for lo, hi in [(0, 5), (5, 9000), (9000, 9001), (9001, 30000)]:
            writer.write(table.slice(lo, hi - lo), lengths[lo:hi])
        entries = writer.close()
    for i, e in enumerate(entries):   # content-addressed: the name ends in the sha256's first 16 digits
        assert e.path == f"train/shard-00003-{i:03d}-{e.sha256[:16]}.arrow"
    assert len(entries) >= 3
    back = []
    for e in entries:
        data = (tmp_path / e.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e.num_bytes, e.sha256)
        if ipc_format == "file":
            reader = pa.ipc.open_file(data)
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        else:
            batches = list(pa.ipc.open_stream(data))
        assert all(b.num_rows == ROWS_PER_BATCH for b in batches[:-1])
        part = pa.Table.from_batches(batches)
        assert part.num_rows == e.num_rows
        back.append(part)
    assert pa.concat_tables(back).equals(table)
    assert sum(e.num_tokens for e in entries) == int(lengths.sum())
    assert all(0.9 * target < e.num_bytes < 1.2 * target for e in entries[:-1])
    assert [p.name for p in tmp_path.rglob("*") if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("cuts", [[7000], [1, 8191, 8192, 8193], list(range(500, 20000, 500))])
def test_bytes_depend_on_the_rows_not_on_how_they_arrive(tmp_path, cuts):
    table, lengths = rows(20000, seed=1)

    def write(root, bounds):
        with ShardWriter(str(root), split="validation", bucket=0, target_bytes=1 << 21, id_itemsize=2) as writer:
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                writer.write(table.slice(lo, hi - lo), lengths[lo:hi])
            return [(e.path, e.sha256) for e in writer.close()]

    assert write(tmp_path / "a", [0, 20000]) == write(tmp_path / "b", [0, *cuts, 20000])


def test_a_failure_leaves_no_temporary_file_and_no_partial_shard(tmp_path, monkeypatch):
    table, lengths = rows(5000, seed=2)
    real = storage.publish_file
    published = []

    def fail_on_second(local, url):
        if published:
            raise OSError("disk gone")
        real(local, url)
        published.append(url)

    monkeypatch.setattr(storage, "publish_file", fail_on_second)
    with pytest.raises(OSError, match="disk gone"):
        with ShardWriter(str(tmp_path), split="train", bucket=0, target_bytes=100_000, id_itemsize=2) as writer:
            writer.write(table, lengths)
            writer.close()
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 1 and re.fullmatch(r"shard-00000-000-[0-9a-f]{16}\.arrow", files[0])
