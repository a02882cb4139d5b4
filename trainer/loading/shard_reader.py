"""One shard, memory-mapped, as flat numpy views that batches are gathered from.

Arrow keeps a list column as one values buffer plus int32 offsets per record batch. A shard
read from a memory map keeps those buffers where they lie in the file, so each column is
exposed here as one file-wide numpy view plus, per row, where its values start in that view
and how many there are. Gathering any rows is then a single vectorised fancy-index: no
``to_pylist``, no per-row Python, no copy of the shard, and the page cache is shared by every
worker process that maps the same file. Boolean lists stay bit-packed and are unpacked only
for the tokens a batch takes.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import as_strided

from mlm_data.dataset.shards import decode_table
from mlm_data.errors import DatasetError


@dataclass(frozen=True)
class ListColumn:
    """A list column: row ``r`` is ``values[starts[r]:starts[r] + lengths[r]]``.

    With ``bits`` the values are a little-endian bitmap (``uint8``) and starts count bits.
    """

    values: np.ndarray
    starts: np.ndarray   # (R,) int64
    lengths: np.ndarray  # (R,) int64
    bits: bool = False
    _windows: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values of ``rows`` concatenated, and their lengths."""
        lengths = self.lengths[rows]
        return self._values_at(_flat_index(self.starts[rows], lengths)), lengths

    def scatter(self, rows: np.ndarray, out: np.ndarray, out_rows: np.ndarray) -> None:
        """Write row ``rows[i]`` left-aligned into ``out[out_rows[i]]`` (``out`` is ``(B, T)``).

        Columns past a row's length receive whatever follows it in the file: the caller masks
        them (one ``where`` for the whole batch beats building a per-token index per row).
        Rows are copied as ``T``-wide windows of the values (a strided view: one row copy each,
        no per-token index); only rows within ``T`` of the end of the values take the slow path.
        """
        width = out.shape[1]
        starts = self.starts[rows]
        if not self.bits and width <= len(self.values):
            fits = starts <= len(self.values) - width
            if fits.all():
                out[out_rows] = self._window_view(width)[starts]
                return
            out[out_rows[fits]] = self._window_view(width)[starts[fits]]
            starts, out_rows = starts[~fits], out_rows[~fits]
        index = starts[:, None] + np.arange(width, dtype=np.int64)[None, :]  # (n, T)
        out[out_rows] = self._values_at(index)

    def _window_view(self, width: int) -> np.ndarray:
        """``(len - width + 1, width)`` view whose row ``i`` is ``values[i:i + width]``."""
        view = self._windows.get(width)
        if view is None:
            step = self.values.strides[0]
            view = as_strided(self.values, shape=(len(self.values) - width + 1, width), strides=(step, step),
                              writeable=False)
            self._windows[width] = view
        return view

    def _values_at(self, index: np.ndarray) -> np.ndarray:
        if self.bits:
            byte = np.take(self.values, index >> 3, mode="clip")
            return ((byte >> (index & 7).astype(np.uint8)) & 1).astype(bool)
        return np.take(self.values, index, mode="clip")


def _within(lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(n) for n in lengths)``, vectorised."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _flat_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.repeat(starts, lengths) + _within(lengths)


class ShardRows:
    """The rows of one verified shard file, read through a memory map."""

    def __init__(self, fd: int, *, source: str, num_rows: int, list_columns: tuple[str, ...],
                 scalar_columns: tuple[str, ...]) -> None:
        """Map the open file ``fd`` (mapping the descriptor, not a path, reads exactly the file
        the caller opened and locked, even if it is unlinked meanwhile)."""
        self.source = source
        size = os.fstat(fd).st_size
        self._base = pa.py_buffer(mmap.mmap(fd, size, access=mmap.ACCESS_READ)) if size else pa.py_buffer(b"")
        table = decode_table(self._base, source=source)
        missing = [c for c in (*list_columns, *scalar_columns) if c not in table.column_names]
        if missing:
            raise DatasetError(f"{source}: shard lacks column(s) {', '.join(missing)} that its task needs "
                               f"(has {', '.join(table.column_names)}); re-create the dataset")
        if table.num_rows != num_rows:
            raise DatasetError(f"{source}: shard has {table.num_rows} rows, the manifest says {num_rows}; "
                               "re-create the dataset")
        self.num_rows = num_rows
        self.columns = {name: self._list_column(table.column(name)) for name in list_columns}
        self.scalars = {name: _scalar(table.column(name)) for name in scalar_columns}
        self.num_bytes = self._base.size

    @property
    def lengths(self) -> np.ndarray:
        return self.columns["input_ids"].lengths

    def _list_column(self, col: pa.ChunkedArray) -> ListColumn:
        value_type = col.type.value_type
        bits = pa.types.is_boolean(value_type)
        dtype = np.dtype(np.uint8) if bits else np.dtype(value_type.to_pandas_dtype())
        base_addr, base_size = self._base.address, self._base.size
        starts, lengths = [], []
        zero_copy = True
        for chunk in col.chunks:
            offsets = chunk.offsets.to_numpy().astype(np.int64)
            child = chunk.values
            data = child.buffers()[1]
            delta = data.address - base_addr if data is not None else -1
            if not (0 <= delta and delta + data.size <= base_size and delta % dtype.itemsize == 0):
                zero_copy = False
                break
            first = delta * 8 + child.offset if bits else delta // dtype.itemsize + child.offset
            starts.append(first + offsets[:-1])
            lengths.append(np.diff(offsets))
        if zero_copy and col.chunks:
            values = np.frombuffer(self._base, dtype=dtype, count=base_size // dtype.itemsize)
            return ListColumn(values, np.concatenate(starts), np.concatenate(lengths), bits)
        # Not laid out in the mapped file (another writer, odd alignment): one copy of the column.
        flat = pa.chunked_array(col.chunks or [pa.array([], type=col.type)]).combine_chunks()
        offsets = flat.offsets.to_numpy().astype(np.int64)
        values = flat.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
        if bits:
            values = np.packbits(values.astype(bool), bitorder="little")
        return ListColumn(values, offsets[:-1] - offsets[0], np.diff(offsets), bits)

    def close(self) -> None:
        """Drop the views; the mapping goes once no batch array refers to it (none does)."""
        self.columns, self.scalars = {}, {}
        self._base = None  # type: ignore[assignment]


def _scalar(col: pa.ChunkedArray) -> np.ndarray:
    """A scalar column as numpy; nulls (an absent segment B) become -1."""
    if col.null_count:
        col = pc.fill_null(col.cast(pa.int64()), -1)
    return col.to_numpy()
