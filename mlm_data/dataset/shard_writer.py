"""Stream a bucket's rows into shards of about a target size, holding one record batch at a time.

A bucket's rows arrive window by window (``stages.write_bucket``). ``ShardWriter`` appends them
to the current shard as Arrow IPC record batches of exactly ``ROWS_PER_BATCH`` rows (a shard's
last batch may be shorter), in the stream or the file framing (``output.ipc_format``; the file
framing's footer is written when the shard is closed), so the bytes depend on the rows alone,
not on how they arrived. Bytes go to a temporary local file and are hashed on the way; when the
shard's estimated size reaches the target, the file is published under its final,
content-addressed name (``shards.content_name``) in one step
(``storage.publish_file``: a rename next to the target locally, one upload to an object store).
So memory holds one record batch whatever ``output.target_shard_bytes`` is, every shard of a
bucket but the last is about the target size, and a retried bundle rewrites the same bytes to
the same names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from mlm_data import storage
from mlm_data.dataset.manifest import ShardEntry
from mlm_data.dataset.shards import ROWS_PER_BATCH, IpcFormat, content_name, shard_stem
from mlm_data.lifetime import ProcessId, exit_if_orphaned

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: temporaries are not locked
    fcntl = None  # type: ignore[assignment]


class _HashingFile:
    """A write-only file that hashes what goes through it (what pyarrow needs of a sink)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        if fcntl is not None:
            # Held until the file is published: a temporary nobody holds was left by a writer
            # that died (``storage.remove_abandoned_temporaries``).
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.sha256 = hashlib.sha256()
        self.size = 0

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        """Flush everything to disk (before the file is published; the lock stays held)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _compact(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.concat_arrays(c.chunks) for c in table.columns], schema=table.schema)


class ShardWriter:
    """Writes the rows of one ``(split, bucket)`` as ``shard-BBBBB-PPP-<sha256 prefix>.arrow`` files.

    Use as a context manager: on an exception the unfinished temporary file is removed.
    ``close()`` publishes the last shard and returns every shard's manifest entry.
    """

    def __init__(self, root: str, *, split: str, bucket: int, target_bytes: int, id_itemsize: int,
                 ipc_format: IpcFormat = "stream", driver: ProcessId | None = None) -> None:
        self._root = root
        self._driver = driver
        self._new_writer = pa.ipc.new_file if ipc_format == "file" else pa.ipc.new_stream
        self._split = split
        self._bucket = bucket
        self._target = target_bytes
        self._itemsize = id_itemsize
        self._entries: list[ShardEntry] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._reset_shard()

    def _reset_shard(self) -> None:
        self._sink: _HashingFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | pa.ipc.RecordBatchFileWriter | None = None
        self._tmp_path: str | None = None
        self._estimate = 0.0
        self._rows = 0
        self._tokens = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._discard()

    @property
    def entries(self) -> list[ShardEntry]:
        return list(self._entries)

    def write(self, table: pa.Table, row_tokens: np.ndarray) -> None:
        """Append rows (``row_tokens``: tokens per row), closing shards as they fill up."""
        n = table.num_rows
        if n == 0:
            return
        estimate = np.cumsum(row_tokens * (self._itemsize + 0.125) + 16)
        pos = 0
        while pos < n:
            base = float(estimate[pos - 1]) if pos else 0.0
            # Rows up to and including the one that brings the shard to its target.
            end = min(n, int(np.searchsorted(estimate, base + self._target - self._estimate, side="left")) + 1)
            self._append(table.slice(pos, end - pos), int(row_tokens[pos:end].sum()))
            self._estimate += float(estimate[end - 1]) - base
            pos = end
            if self._estimate >= self._target:
                self._finish_shard()

    def close(self) -> list[ShardEntry]:
        """Publish the last shard (if it has rows) and return all entries of the bucket."""
        if self._rows:
            self._finish_shard()
        return self.entries

    def _append(self, rows: pa.Table, tokens: int) -> None:
        self._pending.append(rows)
        self._pending_rows += rows.num_rows
        self._rows += rows.num_rows
        self._tokens += tokens
        while self._pending_rows >= ROWS_PER_BATCH:
            self._flush(ROWS_PER_BATCH)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` pending rows as one record batch."""
        pending = pa.concat_tables(self._pending)
        # Concatenating copies each column into fresh, compact buffers, so the bytes depend on
        # the rows alone, not on how they were sliced on the way in; and the rows left over keep
        # a copy of their own rather than the whole window they were sliced from.
        batch = _compact(pending.slice(0, n))
        rest = pending.slice(n)
        self._pending = [pa.Table.from_batches([_compact(rest)])] if rest.num_rows else []
        self._pending_rows -= n
        if self._writer is None:
            self._open(batch.schema)
        self._writer.write_batch(batch)  # type: ignore[union-attr]

    def _open(self, schema: pa.Schema) -> None:
        url = storage.join(self._root, self._stem())
        if storage.is_local(url):
            target = url_to_fs(url)[1]
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self._tmp_path = os.path.join(os.path.dirname(target),
                                          f"{storage.TEMPORARY_PREFIX}{uuid.uuid4().hex}-{os.path.basename(target)}.arrow")
        else:
            fd, self._tmp_path = tempfile.mkstemp(prefix=".tmp-mlm-data-shard-", suffix=".arrow")
            os.close(fd)
        self._sink = _HashingFile(self._tmp_path)
        self._writer = self._new_writer(self._sink, schema)

    def _stem(self) -> str:
        return shard_stem(self._split, self._bucket, len(self._entries))

    def _finish_shard(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)
        assert self._writer is not None and self._sink is not None and self._tmp_path is not None
        self._writer.close()
        self._sink.sync()
        digest = self._sink.sha256.hexdigest()
        rel = content_name(self._stem(), digest, ".arrow")
        if self._driver is not None:
            exit_if_orphaned(self._driver)
        storage.publish_file(self._tmp_path, storage.join(self._root, rel))
        self._sink.close()
        self._entries.append(ShardEntry(path=rel, split=self._split, num_rows=self._rows, num_tokens=self._tokens,
                                        num_bytes=self._sink.size, sha256=digest))
        self._reset_shard()

    def _discard(self) -> None:
        if self._sink is not None:
            self._sink.close()
        if self._tmp_path and os.path.exists(self._tmp_path):
            os.remove(self._tmp_path)
        self._pending = []
        self._pending_rows = 0
        self._reset_shard()
