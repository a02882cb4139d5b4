"""Shard files: Arrow IPC streams, written whole and published in one step, read with checks.

A shard is the IPC *stream* format (what ``datasets.Dataset.from_file`` and
``pyarrow.ipc.open_stream`` read). The writer encodes it in memory, hashes it, and publishes it
with a single write, so a shard object either exists complete or not at all. The reader
re-hashes what it fetched and refuses a shard whose size or sha256 differs from the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mlm_data import storage
from mlm_data.errors import DatasetError

#: Rows per record batch inside a shard: small enough for streaming readers, large enough
#: that per-batch overhead is negligible.
ROWS_PER_BATCH = 8192


def list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """An Arrow list column from flat values and int64 row offsets (no per-row Python)."""
    vals = pa.array(np.ascontiguousarray(values).astype(value_type.to_pandas_dtype(), copy=False), type=value_type)
    if len(offsets) and offsets[-1] >= (1 << 31):
        raise ValueError("more than 2**31 values in one column: use more buckets (output.num_buckets)")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), vals)


def encode_table(table: pa.Table) -> bytes:
    """Serialise ``table`` as an IPC stream of ``ROWS_PER_BATCH``-row record batches."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=ROWS_PER_BATCH):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_table(data: bytes | pa.Buffer, *, source: str) -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.py_buffer(data) if isinstance(data, bytes) else data).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise DatasetError(f"{source}: not a readable Arrow IPC stream ({e}); re-create the dataset") from None


def split_points(row_bytes: np.ndarray, target_bytes: int) -> list[tuple[int, int]]:
    """Cut rows into consecutive parts of about ``target_bytes`` each (at least one row each).

    >>> split_points(np.array([4, 4, 4, 4, 4]), 8)
    [(0, 3), (3, 5)]
    """
    n = len(row_bytes)
    if n == 0:
        return []
    cum = np.cumsum(row_bytes)
    total = int(cum[-1])
    parts = max(1, int(round(total / target_bytes)))
    if parts == 1:
        return [(0, n)]
    bounds = np.searchsorted(cum, np.arange(1, parts) * (total / parts), side="left") + 1
    bounds = np.unique(np.clip(bounds, 1, n - 1))
    edges = [0, *bounds.tolist(), n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def shard_name(split: str, bucket: int, part: int) -> str:
    return f"{split}/shard-{bucket:05d}-{part:03d}.arrow"


@dataclass(frozen=True)
class WrittenShard:
    path: str      # relative to the dataset root
    num_rows: int
    num_bytes: int
    sha256: str


def write_shard(root: str, rel_path: str, table: pa.Table) -> WrittenShard:
    data = encode_table(table)
    storage.write_bytes(storage.join(root, rel_path), data)
    return WrittenShard(rel_path, table.num_rows, len(data), hashlib.sha256(data).hexdigest())


def fetch_shard(url: str, *, num_bytes: int, sha256: str) -> bytes:
    """The shard's bytes, after checking size and checksum against the manifest."""
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise DatasetError(f"{url}: shard listed in the manifest is missing; re-create the dataset") from None
    if len(data) != num_bytes:
        raise DatasetError(f"{url}: shard has {len(data)} bytes, the manifest says {num_bytes}; the file is "
                           "damaged or from another run, re-create the dataset")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DatasetError(f"{url}: shard checksum mismatch (sha256 {digest[:12]}…, manifest {sha256[:12]}…); "
                           "the file is damaged, re-create or re-download the dataset")
    return data
