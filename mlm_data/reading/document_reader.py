"""Input files to documents: stream each file, accounting for every document.

``read_documents`` streams one file and yields, in file order, a ``Document`` or a ``Dropped``
for every document slot, and a ``FileProblem`` when the file as a whole is empty, binary or
corrupt. Memory is bounded by the read chunk plus ``4 * max_document_chars`` bytes, whatever
the file holds: an endless line is skipped, not loaded, and a compressed stream is inflated a
chunk at a time (see ``byte_streams``). Listing files and telling their format is
``input_files``'s job; its names are re-exported here for the callers that import them from
this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from mlm_data import accounting, storage
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading.byte_streams import LONG, BadFile, is_blank, text_lines
from mlm_data.reading.input_files import (
    InputFile,
    detect_format,
    list_input_files,
    stream_compression,
)
from mlm_data.storage.retries import is_access_denied, is_transient

__all__ = [
    "Document", "Dropped", "FileProblem", "InputFile", "ReadItem", "TEXT_FORMATS",
    "detect_format", "list_input_files", "read_documents",
]

#: Parquet rows converted to Python at once; documents can be large, so keep it modest.
PARQUET_BATCH_ROWS = 256

TEXT_FORMATS = ("text", "jsonl", "parquet")
_SKIP_FIX = "or set input.on_bad_file=skip to skip it"

T = TypeVar("T")


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
    compression = stream_compression(file, fmt)
    bound = 4 * max_document_chars

    def items(f: IO[bytes]) -> Iterator[ReadItem]:
        if fmt == "parquet":
            yield from _parquet_items(f, file.name, config.text_field, bound)
            return
        lines = text_lines(f, compression, bound)
        if fmt == "jsonl":
            yield from jsonl_records(lines, file.name, lambda i, line: _json_document(i, line, config.text_field))
        elif config.document_boundary == "line":
            yield from _line_items(lines, file.name)
        else:
            yield from _paragraph_items(lines, file.name, bound)

    return read_guarded(file, config.on_bad_file, items)


def read_guarded(
    file: InputFile, on_bad_file: str, items: Callable[[IO[bytes]], Iterator[T]]
) -> Iterator[T | FileProblem]:
    """Open ``file`` and yield ``items(f)``, turning whole-file problems into the policy's outcome.

    A ``BadFile`` ends the file: an empty file is always a ``FileProblem``; a binary or corrupt
    one raises ``InputError`` (one line: the file, what was found, the fix) unless
    ``on_bad_file="skip"``, when it is a ``FileProblem`` too. Items already yielded stand. Every
    reader (documents and labelled records alike) goes through here, so all of them apply the
    policy the same way.
    """
    try:
        with storage.open_url(file.url, "rb") as f:
            yield from items(f)
    except BadFile as bad:
        if bad.reason != accounting.FILE_EMPTY and on_bad_file != "skip":
            raise InputError(f"{file.url}: {bad.detail}; {bad.fix}, {_SKIP_FIX}") from None
        yield FileProblem(file.name, bad.reason, bad.detail)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise InputError(
            f"{file.url}: cannot open input file ({type(exc).__name__}); was it moved or "
            "deleted after the input was listed? List the input again"
        ) from None


# --------------------------------------------------------------------------------------------
# Lines and documents


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
        if line is LONG:
            too_long, doc, size = True, [], 0
            continue
        if is_blank(line):  # type: ignore[arg-type]
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
        if line is LONG:
            yield Dropped(f"{name}#{index}", accounting.DOCUMENT_TOO_LONG)
        elif is_blank(line):  # type: ignore[arg-type]
            continue
        else:
            yield _decoded(f"{name}#{index}", line)  # type: ignore[arg-type]
        index += 1


def _decoded(doc_id: str, raw: bytes) -> ReadItem:
    try:
        return Document(doc_id, raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Dropped(doc_id, accounting.INVALID_UTF8)


def jsonl_records(lines: Iterator[bytes | object], name: str,
                  parse: Callable[[str, bytes], T]) -> Iterator[T | Dropped]:
    """``parse(id, line)`` for each non-blank line of a JSONL file; ids are ``name#i``, counting
    records, not blank lines. A line over the reader's bound (``LONG``) is dropped as
    ``document_too_long`` and still takes its index, so later ids do not shift."""
    index = 0
    for line in lines:
        record_id = f"{name}#{index}"
        if line is LONG:
            yield Dropped(record_id, accounting.DOCUMENT_TOO_LONG)
        elif not line or line.isspace():  # type: ignore[union-attr]
            continue
        else:
            yield parse(record_id, line)  # type: ignore[arg-type]
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
    pf = open_parquet(f)
    schema = pf.schema_arrow
    if field not in schema.names:
        raise BadFile(
            accounting.FILE_CORRUPT,
            f"no column {field!r} (columns: {', '.join(schema.names)})",
            fix="set input.text_field to the text column, or remove the file",
        )
    kind = schema.field(field).type
    as_bytes = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    if not (as_bytes or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise BadFile(
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
            if not is_parquet_damage(exc):
                raise
            raise BadFile(
                accounting.FILE_CORRUPT, f"unreadable Parquet data after row {index} ({exc})"
            ) from None
        for value in values:
            doc_id = f"{name}#{index}"
            index += 1
            if value is None:
                yield Dropped(doc_id, accounting.MISSING_TEXT)
            elif longer_than(value, bound):
                yield Dropped(doc_id, accounting.DOCUMENT_TOO_LONG)
            else:
                yield to_item(doc_id, value)


def open_parquet(f: IO[bytes]) -> pq.ParquetFile:
    """The Parquet file behind ``f``; ``BadFile`` when it is empty or not readable Parquet."""
    if not f.read(4):
        raise BadFile(accounting.FILE_EMPTY, "the file is empty (0 bytes)")
    f.seek(0)
    try:
        return pq.ParquetFile(f)
    except Exception as exc:
        if not is_parquet_damage(exc):
            raise
        raise BadFile(accounting.FILE_CORRUPT, f"not a readable Parquet file ({exc})") from None


def is_parquet_damage(exc: Exception) -> bool:
    """Arrow reports bad Parquet bytes as a bare ``OSError`` or an ``ArrowException``; store
    hiccups (``ConnectionError``, ``TimeoutError``, ...) are subclasses and must propagate, so
    a runner retries them instead of skipping a good file."""
    if is_transient(exc) or is_access_denied(exc):
        return False
    return isinstance(exc, pa.ArrowException) or type(exc) is OSError


def longer_than(value: str | bytes, bound: int) -> bool:
    """Whether ``value`` takes more than ``bound`` bytes as UTF-8, encoding only when unsure."""
    if isinstance(value, bytes) or len(value) > bound or 4 * len(value) <= bound:
        return len(value) > bound
    return len(value.encode("utf-8", "surrogatepass")) > bound


def _parquet_str_item(doc_id: str, value: object) -> ReadItem:
    return _checked_text(doc_id, value, escaped=False)  # type: ignore[arg-type]


def _parquet_bytes_item(doc_id: str, value: object) -> ReadItem:
    item = _decoded(doc_id, value)  # type: ignore[arg-type]
    return _checked_text(doc_id, item.text, escaped=False) if isinstance(item, Document) else item
