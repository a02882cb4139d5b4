"""Shard files: Arrow IPC, written whole and published in one step, read with checks.

A shard is Arrow IPC in one of its two framings (``output.ipc_format``): the *stream* format
(the default: what ``datasets.Dataset.from_file`` and ``pyarrow.ipc.open_stream`` read) or the
*file* format (Feather v2: what ``pyarrow.dataset``, polars' ``scan_ipc``, pandas'
``read_feather`` and DuckDB through pyarrow read). Both carry the same record batches; our own
readers tell them apart by their first bytes, so every reader of the project takes either.
The writer encodes a shard in memory, hashes it, and publishes it with a single write under a
name that ends in that hash (``content_name``), so a shard object either exists complete or
not at all, and never overwrites a different one. The reader re-hashes what it fetched and
refuses a shard whose size or sha256 differs from the manifest.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import pyarrow as pa

from mlm_data import storage
from mlm_data.errors import DatasetError

#: Rows per record batch inside a shard: small enough for streaming readers, large enough
#: that per-batch overhead is negligible.
ROWS_PER_BATCH = 8192

IpcFormat = Literal["stream", "file"]
IPC_FORMATS: tuple[str, ...] = ("stream", "file")
#: The IPC file format opens with this magic (the stream format with a 0xFFFFFFFF marker).
_FILE_MAGIC = b"ARROW1"


def list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """An Arrow list column from flat values and int64 row offsets (no per-row Python)."""
    vals = pa.array(np.ascontiguousarray(values).astype(value_type.to_pandas_dtype(), copy=False), type=value_type)
    if len(offsets) and offsets[-1] >= (1 << 31):
        raise ValueError("more than 2**31 values in one column: use more buckets (output.num_buckets)")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), vals)


def ipc_format_of(data: bytes | pa.Buffer) -> IpcFormat:
    """Which IPC framing ``data`` uses, from its first bytes."""
    head = bytes(memoryview(data)[: len(_FILE_MAGIC)])
    return "file" if head == _FILE_MAGIC else "stream"


def decode_table(data: bytes | pa.Buffer, *, source: str) -> pa.Table:
    """The table in ``data``, whichever IPC framing it uses (zero-copy over a mapped buffer)."""
    buffer = pa.py_buffer(data) if isinstance(data, bytes) else data
    try:
        if ipc_format_of(buffer) == "file":
            return pa.ipc.open_file(buffer).read_all()
        return pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise DatasetError(f"{source}: not a readable Arrow IPC shard ({e}); re-create the dataset") from None


def shard_stem(split: str, bucket: int, part: int) -> str:
    """Where part ``part`` of bucket ``bucket`` goes, before its content hash is known."""
    return f"{split}/shard-{bucket:05d}-{part:03d}"


def content_name(stem: str, sha256: str, suffix: str) -> str:
    """``stem-<first 16 hex digits of the sha256>suffix``: a name that only these bytes can have.

    Naming files by their content is what lets a new dataset be written next to the one it
    replaces without touching it (a rerun with other settings makes other names; the same
    settings make the same bytes under the same names), and keeps names independent of where
    and when the data was written.

    >>> content_name("train/shard-00000-000", "0123456789abcdef" * 4, ".arrow")
    'train/shard-00000-000-0123456789abcdef.arrow'
    """
    return f"{stem}-{sha256[:16]}{suffix}"


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
