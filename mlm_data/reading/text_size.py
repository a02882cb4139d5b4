"""How much text the input holds, estimated from file metadata: it sizes the bucket plan.

The estimate picks the number of buckets (and so the shard layout) and is printed as "~N MB of
text", so it must be cheap (no decompression, no reading of data) and deterministic (it
depends only on the listed files, never on the runner or on timing). Per file:

* plain files: their size;
* Parquet: the uncompressed size of the configured columns, from the footer's per-column
  ``total_uncompressed_size`` (text pages are mostly text; other columns are not counted);
* gzip: the ISIZE trailer (the last 4 bytes, the uncompressed size mod 2^32) when it is
  plausible: at least the compressed size (text compresses), and the compressed size under
  256 MiB (so that under a 16x ratio ISIZE cannot have wrapped). For a multi-member file it
  is only the last member's size, which the plausibility check mostly catches;
* zstd: the frame content size in the first frame header, when the writer recorded it.

At most ``MAX_PROBES`` files of each kind are probed (spread evenly over the sorted list);
every other file of that kind, and every probe that finds nothing usable, gets the probed
files' expansion ratio (or ``DEFAULT_EXPANSION`` when none was usable), so a listing of
100,000 objects costs a few dozen small reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mlm_data.reading.input_files import InputFile, compression_of, detect_format
from mlm_data.storage import is_access_denied, is_transient, retry

#: Text bytes per stored byte when no probe of a kind gave a size: typical of prose in gzip
#: and zstd files, and in Parquet's snappy or zstd pages.
DEFAULT_EXPANSION = {"gzip": 4.0, "zstd": 4.0, "parquet": 2.0}
#: Files of one kind whose metadata is read; the rest are estimated from their ratio.
MAX_PROBES = 32
#: Below this compressed size a gzip ISIZE cannot have wrapped at 2^32 for ratios under 16.
_ISIZE_TRUSTED_BELOW = 1 << 28
_ZSTD_HEADER_MAX = 18


def estimate_text_bytes(files: Sequence[InputFile], *, fmt: str, columns: Sequence[str]) -> int:
    """Bytes of text in ``files`` (read as ``input.format`` ``fmt``; ``columns`` are the
    Parquet columns that hold text or labels)."""
    by_kind: dict[str, list[InputFile]] = {}
    total = 0
    for f in files:
        kind = _kind(f, fmt)
        if kind is None:
            total += f.size
        else:
            by_kind.setdefault(kind, []).append(f)
    for kind, group in sorted(by_kind.items()):
        probe: Callable[[InputFile], int | None] = (
            (lambda f: _parquet_text_bytes(f, columns)) if kind == "parquet" else _PROBES[kind])
        total += _estimate_group(group, kind, probe)
    return total


def _kind(file: InputFile, fmt: str) -> str | None:
    compression = compression_of(file.name)
    if compression:
        return compression
    return "parquet" if detect_format(file.name, fmt) == "parquet" else None


def _estimate_group(group: list[InputFile], kind: str, probe: Callable[[InputFile], int | None]) -> int:
    n, k = len(group), min(len(group), MAX_PROBES)
    picks = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
    measured = {i: _probed(group[i], probe) for i in picks}
    usable = {i: v for i, v in measured.items() if v is not None}
    stored = sum(group[i].size for i in usable)
    ratio = sum(usable.values()) / stored if stored else DEFAULT_EXPANSION[kind]
    return sum(usable[i] if i in usable else int(f.size * ratio) for i, f in enumerate(group))


def _probed(file: InputFile, probe: Callable[[InputFile], int | None]) -> int | None:
    """``probe(file)``, with store hiccups retried (a guess would make the plan depend on
    timing) and unreadable content taken as "unknown" (the reader reports the file later)."""
    def attempt() -> int | None:
        try:
            return probe(file)
        except Exception as exc:
            if is_transient(exc) or is_access_denied(exc):
                raise
            if isinstance(exc, (OSError, ValueError, EOFError, pa.ArrowException, zstandard.ZstdError)):
                return None
            raise

    return retry(attempt, what=f"reading the size of {file.url}")


def _parquet_text_bytes(file: InputFile, columns: Sequence[str]) -> int | None:
    with fsspec.open(file.url, "rb") as f:
        meta = pq.ParquetFile(f).metadata
    wanted = set(columns)
    total = 0
    found = False
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".", 1)[0] in wanted:  # "tokens.list.element" is "tokens"
                total += chunk.total_uncompressed_size
                found = True
    return total if found else None


def _gzip_size(file: InputFile) -> int | None:
    if not 18 <= file.size < _ISIZE_TRUSTED_BELOW:
        return None
    with fsspec.open(file.url, "rb") as f:
        f.seek(file.size - 4)
        isize = int.from_bytes(f.read(4), "little")
    return isize if isize >= file.size else None


def _zstd_size(file: InputFile) -> int | None:
    with fsspec.open(file.url, "rb") as f:
        head = f.read(_ZSTD_HEADER_MAX)
    size = zstandard.frame_content_size(head)
    return size if size >= file.size else None


_PROBES: dict[str, Callable[[InputFile], int | None]] = {"gzip": _gzip_size, "zstd": _zstd_size}
