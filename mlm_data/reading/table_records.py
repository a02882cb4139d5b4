"""Records from files with named columns: Parquet (a schema) and CSV/TSV (a header row).

Both check the view's columns against what the file declares before reading a record, and a
column that is not there (or, in Parquet, cannot hold its kind) makes the file bad
(``column_mismatch``): see ``records.missing_column``. Parquet is read a batch of the needed
columns at a time; CSV records are found by ``byte_streams.csv_records`` (bounded, quoted
fields may span lines) and split by Python's ``csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError
from mlm_data.reading.byte_streams import LONG, BadFile, is_blank, text_lines
from mlm_data.reading.csv_records import QuoteTracker, csv_fields, csv_records
from mlm_data.reading.input_files import InputFile
from mlm_data.reading.records import (
    INVALID,
    LABEL,
    TEXT,
    TOO_LONG,
    WORDS,
    Dropped,
    RecordView,
    checker,
    missing_column,
    wrong_column_type,
)
from mlm_data.storage.retries import is_access_denied, is_transient

T = TypeVar("T")

#: Parquet rows converted to Python at once; documents can be large, so keep it modest.
PARQUET_BATCH_ROWS = 256


def source(fmt: str, file: InputFile, config: InputConfig, view: RecordView[T], *, compression: str | None,
           bound: int) -> Callable[[IO[bytes]], Iterator[T | Dropped]]:
    """``items(f)`` for one Parquet, CSV or TSV file; column names that a file without a
    header cannot have raise ``ConfigError`` now, before anything is read."""
    if fmt == "parquet":
        return lambda f: _parquet(f, file.name, view, bound)
    positions = None if config.has_header else _positions(view, file.name)
    return lambda f: _delimited(f, fmt, compression, file.name, view, positions, bound)


# --------------------------------------------------------------------------------------------
# Parquet


def _parquet(f: IO[bytes], name: str, view: RecordView[T], bound: int) -> Iterator[T | Dropped]:
    """Rows of a Parquet file, a batch of the needed columns at a time (memory: one batch)."""
    pf = open_parquet(f)
    schema = pf.schema_arrow
    for column in view.columns:
        if column.name not in schema.names:
            raise missing_column(column, schema.names)
        kind = schema.field(column.name).type
        if pa.types.is_dictionary(kind):  # e.g. a pandas categorical
            kind = kind.value_type
        if not _holds(kind, column.kind):
            raise wrong_column_type(column, kind)
    check, make = checker(view.columns), view.make
    index = 0
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(dict.fromkeys(c.name for c in view.columns)))
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            columns = [_values(batch.column(c.name), bound if c.kind == TEXT else None) for c in view.columns]
        except Exception as exc:
            if not is_parquet_damage(exc):
                raise
            raise BadFile(accounting.FILE_CORRUPT, f"unreadable Parquet data after row {index} ({exc})") from None
        for raw in zip(*columns):
            record_id = f"{name}#{index}"
            index += 1
            values = check(raw)
            yield Dropped(record_id, values) if isinstance(values, str) else make(record_id, *values)


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


def _is_text_type(kind: pa.DataType) -> bool:
    return _is_string(kind) or _is_binary(kind)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _holds(kind: pa.DataType, column_kind: str) -> bool:
    """Whether a Parquet column of Arrow type ``kind`` can hold values of ``column_kind``."""
    if column_kind == TEXT:
        return _is_text_type(kind)
    if column_kind == LABEL:
        return _is_text_type(kind) or pa.types.is_integer(kind)
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind)
    return column_kind == WORDS and lists and _is_string(kind.value_type)


def _values(column: pa.Array, bound: int | None) -> list[object]:
    """Python values of a column, with values over ``bound`` bytes (measured by Arrow, before
    anything is decoded) replaced by ``TOO_LONG``."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values = _python_values(column)
    if bound is not None:
        # Nulls have no length: NaN once converted, never over the bound.
        for i in np.flatnonzero(pc.binary_length(column).to_numpy(zero_copy_only=False) > bound).tolist():
            values[i] = TOO_LONG
    return values


def _python_values(column: pa.Array) -> list[object]:
    """Binary and invalid UTF-8 strings decoded strictly, else ``INVALID``."""
    if _is_string(column.type):
        try:
            return column.to_pylist()
        except UnicodeDecodeError:
            column = column.cast(pa.large_binary())
    if _is_binary(column.type):
        return [_decode(v) for v in column.to_pylist()]
    return column.to_pylist()


def _decode(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID


# --------------------------------------------------------------------------------------------
# CSV and TSV


def _positions(view: RecordView[T], name: str) -> list[int]:
    """Column positions in a headerless CSV/TSV file; ``ConfigError`` for names."""
    out = []
    for column in view.columns:
        if not column.name.isdigit():
            raise ConfigError(
                f"input.{column.field}: {column.name!r} is a column name, but input.has_header is false (file "
                f"{name!r}); give a 0-based column position such as '0', or set has_header: true"
            )
        out.append(int(column.name))
    return out


def _header_positions(header: Sequence[str], view: RecordView[T]) -> list[int]:
    """Column positions from the header: a column is a header name, else a 0-based position."""
    names = [h.strip() for h in header]
    out = []
    for column in view.columns:
        if column.name in names:
            out.append(names.index(column.name))
        elif column.name.isdigit():
            out.append(int(column.name))
        else:
            raise missing_column(column, names)
    return out


def _delimited(
    f: IO[bytes], fmt: str, compression: str | None, name: str, view: RecordView[T],
    positions: list[int] | None, bound: int,
) -> Iterator[T | Dropped]:
    """Rows of a CSV or TSV file.

    CSV follows RFC 4180 (quoted fields may hold commas, doubled quotes and line breaks), as
    Python's ``csv`` module reads it; TSV has no quoting at all (IANA
    ``text/tab-separated-values``): a row is a line, split at every tab, so a text may start
    with a quote character. Blank lines between rows are no record; a row without a field the
    view needs is ``invalid_record``.
    """
    expected = f"a {fmt.upper()} file"
    if fmt == "csv":
        quotes = QuoteTracker()
        lines = text_lines(f, compression, bound, expected=expected, observe_long=quotes.observe_long)
        records: Iterator[bytes | object] = csv_records(lines, quotes, bound)
    else:
        records = (line for line in text_lines(f, compression, bound, expected=expected)
                   if line is LONG or not is_blank(line))  # type: ignore[arg-type]
    check, make = checker(view.columns), view.make
    index = 0
    for record in records:
        if positions is None:
            positions = _header_positions(_header(record, fmt), view)
            continue
        record_id = f"{name}#{index}"
        index += 1
        if record is LONG:
            yield Dropped(record_id, accounting.DOCUMENT_TOO_LONG)
            continue
        if not isinstance(record, bytes):  # a quoted field that never closes
            yield Dropped(record_id, accounting.INVALID_RECORD)
            continue
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            yield Dropped(record_id, accounting.INVALID_UTF8)
            continue
        try:
            fields = csv_fields(text) if fmt == "csv" else text.split("\t")
        except csv.Error:
            yield Dropped(record_id, accounting.INVALID_RECORD)
            continue
        if max(positions) >= len(fields):
            yield Dropped(record_id, accounting.INVALID_RECORD)
            continue
        values = check(tuple(fields[p] for p in positions))
        yield Dropped(record_id, values) if isinstance(values, str) else make(record_id, *values)


def _header(record: bytes | object, fmt: str) -> list[str]:
    if not isinstance(record, bytes):
        what = "longer than the record bound" if record is LONG else "an unclosed quote"
        raise BadFile(accounting.FILE_CORRUPT, f"the header row has {what}")
    try:
        text = record.decode("utf-8")
        return csv_fields(text) if fmt == "csv" else text.split("\t")
    except UnicodeDecodeError:
        raise BadFile(accounting.FILE_CORRUPT, "the header row is not valid UTF-8") from None
    except csv.Error as exc:
        raise BadFile(accounting.FILE_CORRUPT, f"the header row is not CSV ({exc})") from None
