"""Input files to documents: list them, then stream each one, accounting for every document.

``list_input_files`` turns patterns into files with *names* relative to the pattern, so that
document ids (``"sub/b.jsonl#17"``) are the same on a laptop and on any bucket. ``read_documents``
streams one file and yields, in file order, a ``Document`` or a ``Dropped`` for every document
slot, and a ``FileProblem`` when the file as a whole is empty, binary or corrupt. Memory is
bounded by the read chunk plus ``4 * max_document_chars`` bytes, whatever the file holds: an
endless line is skipped, not loaded, and a compressed stream is inflated a chunk at a time.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from fsspec.implementations.local import LocalFileSystem

from mlm_data import accounting
from mlm_data.config import InputConfig
from mlm_data.errors import ConfigError, InputError

#: Bytes read (and inflated) per step: big enough to amortise Python overhead, small enough
#: that a reader never holds much more than a couple of them.
CHUNK_BYTES = 1 << 20
#: Leading decompressed bytes searched for a NUL to recognise a binary file (as git and grep do).
BINARY_SNIFF_BYTES = 8192
#: Parquet rows converted to Python at once; documents can be large, so keep it modest.
PARQUET_BATCH_ROWS = 256

TEXT_FORMATS = ("text", "jsonl", "parquet")
_EXTENSIONS = {
    "txt": "text", "text": "text", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl",
    "parquet": "parquet", "csv": "csv", "tsv": "tsv", "conll": "conll", "conllu": "conll",
}
_COMPRESSIONS = {"gz": "gzip", "zst": "zstd", "zstd": "zstd"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = re.compile(r"[*?\[]")
_SKIP_FIX = "or set input.on_bad_file=skip to skip it"


@dataclass(frozen=True)
class InputFile:
    url: str
    """What to open with fsspec: a local path or a URL (``s3://b/k``, ``memory://x``)."""
    name: str
    """Path relative to the pattern's non-glob prefix; the stable part of document ids."""
    size: int
    """Bytes as stored (compressed size), for sizing decisions."""


@dataclass(frozen=True)
class Document:
    id: str
    """``f"{file.name}#{index}"``; ``index`` counts document slots, dropped ones included."""
    text: str


@dataclass(frozen=True)
class Dropped:
    id: str
    reason: str
    """One of the drop reasons in ``mlm_data.accounting``."""


@dataclass(frozen=True)
class FileProblem:
    name: str
    """``InputFile.name`` of the file."""
    reason: str
    """``accounting.FILE_EMPTY``, ``FILE_BINARY`` or ``FILE_CORRUPT``."""
    detail: str
    """What was found, for people: ``"corrupt gzip stream (ends early after 1048576 bytes)"``."""


ReadItem = Document | Dropped | FileProblem


class _BadFile(Exception):
    """A whole-file problem found while reading; ``read_documents`` applies the policy."""

    def __init__(self, reason: str, detail: str, fix: str = "re-create or remove the file") -> None:
        super().__init__(detail)
        self.reason, self.detail, self.fix = reason, " ".join(detail.split()), fix


# --------------------------------------------------------------------------------------------
# Listing


def list_input_files(patterns: Sequence[str]) -> list[InputFile]:
    """Expand files, directories and globs (local or any fsspec URL) into files sorted by name.

    A directory stands for every file below it. Below a directory or a glob's fixed prefix,
    names with a part starting with '.' or '_' (``.DS_Store``, ``_SUCCESS``, ``_temporary/``)
    are skipped, as Hadoop and Spark do. A file reached by two patterns is listed once (with
    the name from the first); two different files with one name would give colliding
    document ids and are refused.

    >>> [f.name for f in list_input_files(["corpus/**/*.jsonl"])]  # doctest: +SKIP
    ['a.jsonl', 'sub/b.jsonl']
    """
    by_url: dict[str, tuple[InputFile, str]] = {}
    by_name: dict[str, tuple[InputFile, str]] = {}
    for pattern in patterns:
        files, hidden = _expand(pattern)
        if not files:
            raise InputError(_no_match_message(pattern, hidden))
        for f in files:
            if f.url in by_url:
                continue
            if f.name in by_name:
                other, other_pattern = by_name[f.name]
                raise InputError(
                    f"input files {other.url!r} (from {other_pattern!r}) and {f.url!r} (from "
                    f"{pattern!r}) have the same name {f.name!r}, so their document ids would "
                    "collide; use one pattern with a common parent directory (e.g. 'corpus/**/*.txt')"
                )
            by_url[f.url] = by_name[f.name] = (f, pattern)
    return sorted((f for f, _ in by_url.values()), key=lambda f: f.name)


def _expand(pattern: str) -> tuple[list[InputFile], int]:
    """Files for one pattern, and how many were skipped as hidden."""
    fs, path = fsspec.core.url_to_fs(pattern)
    path = path.rstrip("/") or path
    local = isinstance(fs, LocalFileSystem)

    def url(p: str) -> str:
        return p if local else fs.unstrip_protocol(p)

    found: list[tuple[str, str, dict]] = []  # (path, name, info)
    if _GLOB_CHARS.search(path):
        parts = path.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
        prefix = "/".join(parts[:first])
        for p, info in sorted(fs.glob(path, detail=True).items()):
            if info.get("type") == "directory":
                found += [(q, _relative(q, prefix), i) for q, i in _files_below(fs, p)]
            else:
                found.append((p, _relative(p, prefix), info))
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return [], 0
        if info.get("type") != "directory":
            return [InputFile(url(path), posixpath.basename(path), int(info.get("size") or 0))], 0
        found = [(q, _relative(q, path), i) for q, i in _files_below(fs, path)]
    visible = [(p, n, i) for p, n, i in found if not _is_hidden(n)]
    files = [InputFile(url(p), n, int(i.get("size") or 0)) for p, n, i in visible]
    return files, len(found) - len(visible)


def _files_below(fs: fsspec.AbstractFileSystem, path: str) -> list[tuple[str, dict]]:
    return sorted(fs.find(path, detail=True).items())


def _relative(path: str, prefix: str) -> str:
    return path[len(prefix):].lstrip("/") if path.startswith(prefix) else path.lstrip("/")


def _is_hidden(name: str) -> bool:
    return any(part.startswith((".", "_")) for part in name.split("/"))


def _no_match_message(pattern: str, hidden: int) -> str:
    msg = f"input pattern {pattern!r} matched no files; check the path"
    if hidden:
        msg += f" ({hidden} hidden file(s) with a name part starting with '.' or '_' were skipped)"
    if "://" not in pattern and not os.path.isabs(pattern):
        msg += f" (relative paths start at {os.getcwd()})"
    return msg + "; use '*' within a directory and '**' across directories"


# --------------------------------------------------------------------------------------------
# Formats


def detect_format(name: str, format: str = "auto") -> str:
    """The format of file ``name`` under ``input.format``: ``auto`` looks at the extension.

    Compression suffixes are ignored and unknown extensions count as text:
    ``detect_format("a.jsonl.zst") == "jsonl"``, ``detect_format("README") == "text"``.
    """
    if format != "auto":
        return format
    base, ext = _split_ext(name.lower())
    if ext in _COMPRESSIONS:
        base, ext = _split_ext(base)
    return _EXTENSIONS.get(ext, "text")


def _split_ext(name: str) -> tuple[str, str]:
    base, dot, ext = posixpath.basename(name).rpartition(".")
    return (base, ext) if dot and base else (name, "")


def _compression(name: str) -> str | None:
    return _COMPRESSIONS.get(_split_ext(name.lower())[1])


def read_documents(
    file: InputFile, config: InputConfig, *, max_document_chars: int
) -> Iterator[ReadItem]:
    """Stream ``file`` as documents, one ``Document`` or ``Dropped`` per document slot.

    Slots are numbered in file order and the number is part of the id, so an id means the same
    document in every run. An empty file yields one ``FileProblem(FILE_EMPTY)``. A binary or
    corrupt file raises ``InputError`` (``on_bad_file="fail"``) or yields a ``FileProblem`` and
    ends (``"skip"``); documents yielded before the damage was found are valid and stand.
    Documents over ``4 * max_document_chars`` bytes are dropped without ever being held whole.

    A format that is not a text corpus (conll, csv, tsv) raises ``ConfigError`` at the call,
    before anything is read; everything else is found while iterating.
    """
    fmt = detect_format(file.name, config.format)
    if fmt not in TEXT_FORMATS:
        raise ConfigError(
            f"input.format: {fmt!r} (file {file.name!r}) is a labelled-data format, not a "
            f"text-corpus format; use one of {', '.join(TEXT_FORMATS)} or 'auto'"
        )
    compression = _compression(file.name)
    if fmt == "parquet" and compression:
        raise InputError(
            f"{file.url}: Parquet compresses internally and cannot be read through {compression}; "
            "decompress the file or write it with Parquet's own compression"
        )
    return _read(file, config, fmt, compression, bound=4 * max_document_chars)


def _read(
    file: InputFile, config: InputConfig, fmt: str, compression: str | None, *, bound: int
) -> Iterator[ReadItem]:
    try:
        with fsspec.open(file.url, "rb") as f:
            if fmt == "parquet":
                yield from _parquet_items(f, file.name, config.text_field, bound)
                return
            lines = _lines(_sniffed(_decompressed(f, compression)), bound)
            if fmt == "jsonl":
                yield from _jsonl_items(lines, file.name, config.text_field)
            elif config.document_boundary == "line":
                yield from _line_items(lines, file.name)
            else:
                yield from _paragraph_items(lines, file.name, bound)
    except _BadFile as bad:
        if bad.reason != accounting.FILE_EMPTY and config.on_bad_file != "skip":
            raise InputError(f"{file.url}: {bad.detail}; {bad.fix}, {_SKIP_FIX}") from None
        yield FileProblem(file.name, bad.reason, bad.detail)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise InputError(
            f"{file.url}: cannot open input file ({type(exc).__name__}); was it moved or "
            "deleted after the input was listed? List the input again"
        ) from None


# --------------------------------------------------------------------------------------------
# Bytes: decompression and sniffing


def _decompressed(f: IO[bytes], compression: str | None) -> Iterator[bytes]:
    """Decompressed content in pieces of at most ``CHUNK_BYTES``, whatever the ratio."""
    if compression is None:
        return iter(lambda: f.read(CHUNK_BYTES), b"")
    head = f.read(4)
    if not head:
        raise _BadFile(accounting.FILE_EMPTY, "the file is empty (0 bytes)")
    f.seek(0)
    if compression == "gzip":
        if not head.startswith(_GZIP_MAGIC):
            raise _BadFile(accounting.FILE_CORRUPT, "not a gzip file (bad magic bytes)")
        return _gunzip(f)
    if not (head == _ZSTD_MAGIC or _is_skippable_zstd(head)):
        raise _BadFile(accounting.FILE_CORRUPT, "not a zstd file (bad magic bytes)")
    return _unzstd(f)


def _gunzip(f: IO[bytes]) -> Iterator[bytes]:
    """Inflate every gzip member (``cat a.gz b.gz`` is valid gzip), bounded by ``max_length``."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    produced = 0
    pending = b""
    while True:
        if not pending:
            pending = f.read(CHUNK_BYTES)
            if not pending:
                # zlib may still hold output for input it has consumed.
                out = d.flush()
                produced += len(out)
                if out:
                    yield out
                if not d.eof:
                    raise _BadFile(
                        accounting.FILE_CORRUPT,
                        f"corrupt gzip stream (ends early after {produced} bytes)",
                    )
                return
        try:
            out = d.decompress(pending, CHUNK_BYTES)
        except zlib.error as exc:
            raise _BadFile(
                accounting.FILE_CORRUPT, f"corrupt gzip stream ({exc} after {produced} bytes)"
            ) from None
        pending = d.unconsumed_tail
        if out:
            produced += len(out)
            yield out
        if d.eof:
            pending = d.unused_data + pending
            while len(pending) < 2 and (more := f.read(CHUNK_BYTES)):
                pending += more
            if not pending:
                return
            if pending.startswith(_GZIP_MAGIC):
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            # Some tools pad gzip files with zeros; anything else means damage.
            while pending:
                if pending.strip(b"\0"):
                    raise _BadFile(
                        accounting.FILE_CORRUPT,
                        f"corrupt gzip stream (unexpected data after {produced} bytes)",
                    )
                pending = f.read(CHUNK_BYTES)
            return


def _is_skippable_zstd(head: bytes) -> bool:
    return len(head) == 4 and head[1:] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


def _unzstd(f: IO[bytes]) -> Iterator[bytes]:
    """Inflate every zstd frame; a stream cut inside a frame is corrupt, not short.

    ``stream_reader`` bounds the output per read but reports a truncated input as a clean end,
    so the raw bytes also go through ``_ZstdFrames``, which walks the frame and block headers.
    """
    frames = _ZstdFrames()

    class Source:
        def read(self, n: int = -1) -> bytes:
            data = f.read(n)
            frames.feed(data)
            return data

    reader = zstandard.ZstdDecompressor().stream_reader(
        Source(), read_size=CHUNK_BYTES, read_across_frames=True
    )
    produced = 0
    while True:
        try:
            out = reader.read(CHUNK_BYTES)
        except zstandard.ZstdError as exc:
            raise _BadFile(
                accounting.FILE_CORRUPT, f"corrupt zstd stream ({exc} after {produced} bytes)"
            ) from None
        if not out:
            break
        produced += len(out)
        yield out
    problem = frames.problem() if frames.error is None else frames.error
    if problem:
        raise _BadFile(accounting.FILE_CORRUPT, f"corrupt zstd stream ({problem} after {produced} bytes)")


class _ZstdFrames:
    """Follows zstd frame structure (RFC 8878) without decoding it, to see where frames end."""

    def __init__(self) -> None:
        self._need, self._on_header = 4, self._magic
        self._buf = b""
        self._skip = 0
        self._checksum = False
        self._in_frame = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n and self.error is None:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._on_header(header)

    def problem(self) -> str | None:
        if self._in_frame or self._skip or self._buf:
            return "ends inside a frame"
        return None

    def _magic(self, b: bytes) -> None:
        if b == _ZSTD_MAGIC:
            self._in_frame = True
            self._need, self._on_header = 1, self._frame_header
        elif _is_skippable_zstd(b):
            self._in_frame = True
            self._need, self._on_header = 4, self._skippable_size
        else:
            self.error = "unexpected data between frames"

    def _skippable_size(self, b: bytes) -> None:
        self._skip = int.from_bytes(b, "little")
        self._in_frame = False
        self._need, self._on_header = 4, self._magic

    def _frame_header(self, b: bytes) -> None:
        fhd = b[0]
        single_segment = (fhd >> 5) & 1
        self._checksum = bool((fhd >> 2) & 1)
        fcs = (1 if single_segment else 0, 2, 4, 8)[fhd >> 6]
        self._skip = (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
        self._need, self._on_header = 3, self._block_header

    def _block_header(self, b: bytes) -> None:
        bh = int.from_bytes(b, "little")
        last, kind, size = bh & 1, (bh >> 1) & 3, bh >> 3
        if kind == 3:
            self.error = "reserved block type"
            return
        self._skip = 1 if kind == 1 else size
        if last:
            self._skip += 4 if self._checksum else 0
            self._in_frame = False
            self._need, self._on_header = 4, self._magic


def _sniffed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Refuse empty and binary content, and drop a UTF-8 byte order mark."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= BINARY_SNIFF_BYTES:
            break
    if not head:
        raise _BadFile(accounting.FILE_EMPTY, "the file is empty (no content)")
    nul = head.find(b"\0", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise _BadFile(
            accounting.FILE_BINARY,
            f"binary content (NUL byte at offset {nul}), not a text or JSONL file",
            fix="remove it from the input or narrow input.paths",
        )
    yield head[len(_BOM):] if head.startswith(_BOM) else head
    yield from chunks


# --------------------------------------------------------------------------------------------
# Lines and documents

#: Stands for a line longer than the bound that was skipped rather than read.
_LONG = object()


def _lines(chunks: Iterator[bytes], bound: int) -> Iterator[bytes | object]:
    """Lines without their ``\\n`` (and ``\\r``); ``_LONG`` for a non-blank line over ``bound``.

    A long line is discarded piece by piece as it streams past, so it never exists whole;
    a long line of only spaces yields ``b""`` (a blank line), as a short one would.
    """
    carry: list[bytes] = []  # the start of the current line, at most ``bound`` bytes
    carried = 0
    skipping = nonblank = False  # inside an over-long line; whether it had visible bytes
    for chunk in chunks:
        start = 0
        if skipping:
            end = chunk.find(b"\n")
            piece = chunk if end < 0 else chunk[:end]
            nonblank = nonblank or not (not piece or piece.isspace())
            if end < 0:
                continue
            yield _LONG if nonblank else b""
            skipping, start = False, end + 1
        last = chunk.rfind(b"\n", start)
        if last >= 0:
            block = b"".join((*carry, chunk[start:last])) if carry else chunk[start:last]
            carry, carried = [], 0
            for line in block.split(b"\n"):
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > bound:
                    yield _LONG if line.strip() else b""
                else:
                    yield line
            start = last + 1
        tail = chunk[start:]
        if carried + len(tail) > bound + 1:  # + 1: a "\r" that will be stripped
            nonblank = any(p.strip() for p in (*carry, tail))
            carry, carried, skipping = [], 0, True
        elif tail:
            carry.append(tail)
            carried += len(tail)
    if skipping:
        yield _LONG if nonblank else b""
    elif carry:
        line = b"".join(carry)
        yield line[:-1] if line.endswith(b"\r") else line


def _is_blank(line: bytes) -> bool:
    """Whitespace only, Unicode spaces included (a line of no-break spaces separates documents)."""
    if not line or line.isspace():
        return True
    if line.isascii():
        return False
    try:
        return line.decode("utf-8").isspace()
    except UnicodeDecodeError:
        return False


def _paragraph_items(lines: Iterator[bytes | object], name: str, bound: int) -> Iterator[ReadItem]:
    index = 0
    doc: list[bytes] = []
    size = 0
    too_long = False

    def finish() -> ReadItem:
        doc_id = f"{name}#{index}"
        if too_long:
            return Dropped(doc_id, accounting.DOCUMENT_TOO_LONG)
        return _decoded(doc_id, b"\n".join(doc))

    for line in lines:
        if line is _LONG:
            too_long, doc, size = True, [], 0
            continue
        if _is_blank(line):  # type: ignore[arg-type]
            if doc or too_long:
                yield finish()
                index += 1
                doc, size, too_long = [], 0, False
            continue
        if too_long:
            continue
        size += len(line) + 1  # type: ignore[arg-type]
        if size > bound + 1:
            too_long, doc, size = True, [], 0
        else:
            doc.append(line)  # type: ignore[arg-type]
    if doc or too_long:
        yield finish()


def _line_items(lines: Iterator[bytes | object], name: str) -> Iterator[ReadItem]:
    index = 0
    for line in lines:
        if line is _LONG:
            yield Dropped(f"{name}#{index}", accounting.DOCUMENT_TOO_LONG)
        elif _is_blank(line):  # type: ignore[arg-type]
            continue
        else:
            yield _decoded(f"{name}#{index}", line)  # type: ignore[arg-type]
        index += 1


def _decoded(doc_id: str, raw: bytes) -> ReadItem:
    try:
        return Document(doc_id, raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Dropped(doc_id, accounting.INVALID_UTF8)


def _jsonl_items(lines: Iterator[bytes | object], name: str, field: str) -> Iterator[ReadItem]:
    index = 0
    for line in lines:
        doc_id = f"{name}#{index}"
        if line is _LONG:
            yield Dropped(doc_id, accounting.DOCUMENT_TOO_LONG)
        elif not line or line.isspace():  # type: ignore[union-attr]
            continue
        else:
            yield _json_document(doc_id, line, field)  # type: ignore[arg-type]
        index += 1


def _json_document(doc_id: str, line: bytes, field: str) -> ReadItem:
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return Dropped(doc_id, accounting.INVALID_UTF8)
    except (ValueError, RecursionError):
        return Dropped(doc_id, accounting.INVALID_JSON)
    if not isinstance(obj, dict):
        return Dropped(doc_id, accounting.INVALID_JSON)
    text = obj.get(field)
    if not isinstance(text, str):
        return Dropped(doc_id, accounting.MISSING_TEXT)
    return _checked_text(doc_id, text, escaped=b"\\u" in line)


def _checked_text(doc_id: str, text: str, *, escaped: bool) -> ReadItem:
    """Drop empty text, and text with lone surrogates (JSON ``"\\ud800"``: not encodable)."""
    if not text.strip():
        return Dropped(doc_id, accounting.EMPTY)
    if escaped:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return Dropped(doc_id, accounting.INVALID_UTF8)
    return Document(doc_id, text)


# --------------------------------------------------------------------------------------------
# Parquet


def _parquet_items(f: IO[bytes], name: str, field: str, bound: int) -> Iterator[ReadItem]:
    """Stream one column a batch at a time (memory: one row group's column chunk)."""
    if not f.read(4):
        raise _BadFile(accounting.FILE_EMPTY, "the file is empty (0 bytes)")
    f.seek(0)
    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:
        if not _is_parquet_damage(exc):
            raise
        raise _BadFile(accounting.FILE_CORRUPT, f"not a readable Parquet file ({exc})") from None
    schema = pf.schema_arrow
    if field not in schema.names:
        raise _BadFile(
            accounting.FILE_CORRUPT,
            f"no column {field!r} (columns: {', '.join(schema.names)})",
            fix="set input.text_field to the text column, or remove the file",
        )
    kind = schema.field(field).type
    as_bytes = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    if not (as_bytes or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise _BadFile(
            accounting.FILE_CORRUPT,
            f"column {field!r} has type {kind}, not string",
            fix="set input.text_field to a string column, or remove the file",
        )
    to_item: Callable[[str, object], ReadItem] = _parquet_bytes_item if as_bytes else _parquet_str_item
    index = 0
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[field])
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            values = batch.column(0).to_pylist()
        except UnicodeDecodeError:
            # A string column holding invalid UTF-8: judge its values one by one.
            values = batch.column(0).cast(pa.binary()).to_pylist()
            to_item = _parquet_bytes_item
        except Exception as exc:
            if not _is_parquet_damage(exc):
                raise
            raise _BadFile(
                accounting.FILE_CORRUPT, f"unreadable Parquet data after row {index} ({exc})"
            ) from None
        for value in values:
            doc_id = f"{name}#{index}"
            index += 1
            if value is None:
                yield Dropped(doc_id, accounting.MISSING_TEXT)
            elif _longer_than(value, bound):
                yield Dropped(doc_id, accounting.DOCUMENT_TOO_LONG)
            else:
                yield to_item(doc_id, value)


def _is_parquet_damage(exc: Exception) -> bool:
    """Arrow reports bad Parquet bytes as a bare ``OSError`` or an ``ArrowException``; store
    hiccups (``ConnectionError``, ``TimeoutError``, ...) are subclasses and must propagate, so
    a runner retries them instead of skipping a good file."""
    return isinstance(exc, pa.ArrowException) or type(exc) is OSError


def _longer_than(value: str | bytes, bound: int) -> bool:
    if isinstance(value, bytes) or len(value) > bound or 4 * len(value) <= bound:
        return len(value) > bound
    return len(value.encode("utf-8", "surrogatepass")) > bound


def _parquet_str_item(doc_id: str, value: object) -> ReadItem:
    return _checked_text(doc_id, value, escaped=False)  # type: ignore[arg-type]


def _parquet_bytes_item(doc_id: str, value: object) -> ReadItem:
    item = _decoded(doc_id, value)  # type: ignore[arg-type]
    return _checked_text(doc_id, item.text, escaped=False) if isinstance(item, Document) else item
