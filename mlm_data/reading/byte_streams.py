"""Bytes to lines, in bounded memory: decompression, sniffing and a bounded line splitter.

Every reader of line-oriented input (text, JSONL, CoNLL, CSV/TSV) goes through here, so all of
them share one set of guarantees: gzip and zstd are inflated a chunk at a time whatever the
ratio (and a stream cut short is reported as corrupt, not read as short); empty and binary
content and a UTF-8 byte order mark are dealt with before the first line; and a line longer
than the reader's bound is skipped piece by piece as it streams past, never held whole.
Whole-file problems are raised as ``BadFile``; the reader turns them into an error or a
``FileProblem`` according to ``input.on_bad_file``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import zstandard

from mlm_data import accounting

#: Bytes read (and inflated) per step: big enough to amortise Python overhead, small enough
#: that a reader never holds much more than a couple of them.
CHUNK_BYTES = 1 << 20
#: Leading decompressed bytes searched for a NUL to recognise a binary file (as git and grep do).
BINARY_SNIFF_BYTES = 8192

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"


class BadFile(Exception):
    """A whole-file problem found while reading; the reader applies ``input.on_bad_file``."""

    def __init__(self, reason: str, detail: str, fix: str = "re-create or remove the file") -> None:
        super().__init__(detail)
        self.reason, self.detail, self.fix = reason, " ".join(detail.split()), fix


def text_lines(
    f: IO[bytes],
    compression: str | None,
    bound: int,
    *,
    expected: str = "a text or JSONL file",
    observe_long: Callable[[bytes], None] | None = None,
) -> Iterator[bytes | object]:
    """The lines of a (possibly compressed) text file: ``lines(sniffed(decompressed(f)))``."""
    return lines(sniffed(decompressed(f, compression), expected=expected), bound, observe_long=observe_long)


# --------------------------------------------------------------------------------------------
# Decompression


def decompressed(f: IO[bytes], compression: str | None) -> Iterator[bytes]:
    """Decompressed content in pieces of at most ``CHUNK_BYTES``, whatever the ratio."""
    if compression is None:
        return iter(lambda: f.read(CHUNK_BYTES), b"")
    head = f.read(4)
    if not head:
        raise BadFile(accounting.FILE_EMPTY, "the file is empty (0 bytes)")
    f.seek(0)
    if compression == "gzip":
        if not head.startswith(_GZIP_MAGIC):
            raise BadFile(accounting.FILE_CORRUPT, "not a gzip file (bad magic bytes)")
        return _gunzip(f)
    if not (head == _ZSTD_MAGIC or _is_skippable_zstd(head)):
        raise BadFile(accounting.FILE_CORRUPT, "not a zstd file (bad magic bytes)")
    return _unzstd(f)


def _gunzip(f: IO[bytes]) -> Iterator[bytes]:
    """Inflate with the standard library's ``gzip``, at most ``CHUNK_BYTES`` at a time.

    ``gzip`` reads every member (``cat a.gz b.gz`` is valid gzip), skips zero padding after
    the last one, and checks each member's CRC and length; its complaints become ``BadFile``.
    ``read1`` hands on what one step inflated, so everything before the damage has been
    yielded (and is counted in the message) when the error is raised.
    """
    reader = gzip.GzipFile(fileobj=f, mode="rb")
    produced = 0
    while True:
        try:
            piece = reader.read1(CHUNK_BYTES)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise _gzip_damage(exc, produced) from None
        if not piece:
            return
        produced += len(piece)
        yield piece


def _gzip_damage(exc: Exception, produced: int) -> BadFile:
    if isinstance(exc, EOFError):
        what = "ends early"
    elif str(exc).startswith("Not a gzipped file"):
        # Read where the next member's header would be: neither a member nor zero padding.
        what = "unexpected data"
    else:
        what = str(exc)
    return BadFile(accounting.FILE_CORRUPT, f"corrupt gzip stream ({what} after {produced} bytes)")


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
            raise BadFile(
                accounting.FILE_CORRUPT, f"corrupt zstd stream ({exc} after {produced} bytes)"
            ) from None
        if not out:
            break
        produced += len(out)
        yield out
    problem = frames.problem() if frames.error is None else frames.error
    if problem:
        raise BadFile(accounting.FILE_CORRUPT, f"corrupt zstd stream ({problem} after {produced} bytes)")


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


# --------------------------------------------------------------------------------------------
# Sniffing and lines


def sniffed(chunks: Iterator[bytes], *, expected: str = "a text or JSONL file") -> Iterator[bytes]:
    """Refuse empty and binary content, and drop a UTF-8 byte order mark.

    ``expected`` completes the message for a binary file: "binary content (...), not {expected}".
    """
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= BINARY_SNIFF_BYTES:
            break
    if not head:
        raise BadFile(accounting.FILE_EMPTY, "the file is empty (no content)")
    nul = head.find(b"\0", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise BadFile(
            accounting.FILE_BINARY,
            f"binary content (NUL byte at offset {nul}), not {expected}",
            fix="remove it from the input or narrow input.paths",
        )
    yield head[len(_BOM):] if head.startswith(_BOM) else head
    yield from chunks


#: Stands for a line longer than the bound that was skipped rather than read.
LONG = object()


def lines(
    chunks: Iterator[bytes], bound: int, *, observe_long: Callable[[bytes], None] | None = None
) -> Iterator[bytes | object]:
    """Lines without their ``\\n`` (and ``\\r``); ``LONG`` for a non-blank line over ``bound``.

    A long line is discarded piece by piece as it streams past, so it never exists whole;
    a long line of only spaces yields ``b""`` (a blank line), as a short one would. A reader
    that must still see what a long line held (the CSV reader follows its quotes to find where
    the record ends) passes ``observe_long``: it is called with the line's pieces, in order,
    before the ``LONG`` (or ``b""``) that stands for the line is yielded.
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
            if observe_long is not None:
                observe_long(piece)
            if end < 0:
                continue
            yield LONG if nonblank else b""
            skipping, start = False, end + 1
        last = chunk.rfind(b"\n", start)
        if last >= 0:
            block = b"".join((*carry, chunk[start:last])) if carry else chunk[start:last]
            carry, carried = [], 0
            for line in block.split(b"\n"):
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > bound:
                    if observe_long is not None:
                        observe_long(line)
                    yield LONG if line.strip() else b""
                else:
                    yield line
            start = last + 1
        tail = chunk[start:]
        if carried + len(tail) > bound + 1:  # + 1: a "\r" that will be stripped
            nonblank = any(p.strip() for p in (*carry, tail))
            if observe_long is not None:
                for p in (*carry, tail):
                    observe_long(p)
            carry, carried, skipping = [], 0, True
        elif tail:
            carry.append(tail)
            carried += len(tail)
    if skipping:
        yield LONG if nonblank else b""
    elif carry:
        line = b"".join(carry)
        yield line[:-1] if line.endswith(b"\r") else line


def is_blank(line: bytes) -> bool:
    """Whitespace only, Unicode spaces included (a line of no-break spaces separates documents)."""
    if not line or line.isspace():
        return True
    if line.isascii():
        return False
    try:
        return line.decode("utf-8").isspace()
    except UnicodeDecodeError:
        return False
