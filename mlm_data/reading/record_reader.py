"""Labelled input files to records: tagged sentences and labelled texts, every slot counted.

``read_labelled`` is the labelled-data twin of ``readers.read_documents``, with the same
promises: one item per record slot, in file order, with the id ``f"{file.name}#{index}"``;
a bad record is a ``Dropped`` with a reason from ``accounting``, never an error; a whole-file
problem follows ``input.on_bad_file``; gzip and zstd are read transparently; memory is bounded
by the read chunk plus ``4 * max_document_chars`` bytes per record, whatever the file holds.

Formats, by task:

* token classification: ``conll`` (one token per line, a blank line ends a sentence) and
  ``jsonl`` (``{tokens_field: [...], tags_field: [...]}``): ``TaggedSentence`` records;
* sequence classification: ``jsonl``, ``csv``, ``tsv`` and ``parquet`` with a text, an optional
  second text and a label column: ``LabelledText`` records.

Configuration mistakes that only the file can reveal (a CSV header or Parquet schema without
the configured column) raise ``InputError`` whatever ``on_bad_file`` says: skipping every
file of a misconfigured run would hide the mistake behind an empty dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import pyarrow as pa

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading.byte_streams import (
    LONG,
    BadFile,
    QuoteTracker,
    csv_fields,
    csv_records,
    is_blank,
    text_lines,
)
from mlm_data.reading.document_reader import (
    PARQUET_BATCH_ROWS,
    Dropped,
    FileProblem,
    is_parquet_damage,
    jsonl_records,
    longer_than,
    open_parquet,
    read_guarded,
)
from mlm_data.reading.input_files import (
    InputFile,
    detect_format,
    format_extension,
    stream_compression,
)

#: The formats each labelled task reads.
FORMATS = {
    "token_classification": ("conll", "jsonl"),
    "sequence_classification": ("jsonl", "csv", "tsv", "parquet"),
}


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence for token classification: pre-split words and one tag per word."""

    id: str
    """``f"{file.name}#{index}"``; ``index`` counts sentence slots, dropped ones included."""
    words: tuple[str, ...]
    tags: tuple[str, ...]
    """As written in the file (stripped of surrounding whitespace); never empty strings."""


@dataclass(frozen=True)
class LabelledText:
    """One example for sequence classification."""

    id: str
    """``f"{file.name}#{index}"``; ``index`` counts record slots, dropped ones included."""
    text: str
    text_pair: str | None
    """The second text of a pair (``input.text_pair_field``), None for single texts."""
    label: str
    """The label as text, stripped: integer labels become ``str(value)`` ("3"); ids are given
    later, once the label vocabulary is known."""


LabelledItem = TaggedSentence | LabelledText | Dropped | FileProblem


def read_labelled(
    file: InputFile, config: InputConfig, *, task: str, max_document_chars: int
) -> Iterator[LabelledItem]:
    """Stream ``file`` as labelled records of ``task``, one item per record slot.

    A format the task does not read, and CSV/TSV field names that cannot be positions in a
    file without a header, raise ``ConfigError`` at the call, before anything is read.
    Records over ``4 * max_document_chars`` bytes (a CoNLL sentence: all its lines) are
    dropped as ``document_too_long`` without ever being held whole.
    """
    formats = FORMATS.get(task)
    if formats is None:
        raise ConfigError(f"instances.task: {task!r} has no labelled input; use one of {', '.join(FORMATS)}")
    fmt = detect_format(file.name, config.format)
    if fmt not in formats:
        raise ConfigError(
            f"input.format: {fmt!r} (file {file.name!r}) is not a {task} format; use one of "
            f"{', '.join(formats)} (or 'auto' with the extensions .{', .'.join(_extensions(formats))})"
        )
    compression = stream_compression(file, fmt)
    if fmt == "conll" and config.conll_label_column == config.conll_token_column:
        raise ConfigError(
            f"input.conll_label_column: {config.conll_label_column} is also input.conll_token_column; "
            "the tag must come from another column"
        )
    positions = None if config.has_header or fmt not in ("csv", "tsv") else _positions(config, file.name)
    bound = 4 * max_document_chars

    def items(f: IO[bytes]) -> Iterator[LabelledItem]:
        if fmt == "parquet":
            yield from _parquet_items(f, file, config, bound)
        elif fmt == "conll":
            conllu = format_extension(file.name) == "conllu"
            yield from _conll_items(text_lines(f, compression, bound, expected="a CoNLL file"),
                                    file.name, config, bound, conllu=conllu)
        elif fmt == "jsonl":
            lines = text_lines(f, compression, bound, expected="a JSONL file")
            tagged = task == "token_classification"
            yield from jsonl_records(lines, file.name, lambda i, line: _json_record(i, line, config, tagged=tagged))
        else:
            yield from _delimited_items(f, compression, file, config, fmt, positions, bound)

    return read_guarded(file, config.on_bad_file, items)


def _extensions(formats: tuple[str, ...]) -> list[str]:
    names = {"conll": ["conll", "conllu", "bio", "iob"], "jsonl": ["jsonl", "json", "ndjson"]}
    return [ext for fmt in formats for ext in names.get(fmt, [fmt])]


# --------------------------------------------------------------------------------------------
# CoNLL


def _conll_items(
    lines: Iterator[bytes | object], name: str, config: InputConfig, bound: int, *, conllu: bool
) -> Iterator[TaggedSentence | Dropped]:
    """Sentences of a one-token-per-line file.

    Columns are tab-separated when the line holds a tab, else whitespace-separated. A blank
    line or a ``-DOCSTART-`` line ends a sentence; ``-DOCSTART-`` lines are no record. In
    CoNLL-U (``.conllu``) ``#`` comment lines and multi-word token / empty node lines (ids
    like ``1-2`` and ``1.1``) are skipped too. A sentence keeps the first problem found in
    it: a line without the word or tag column (``invalid_record``), invalid UTF-8, or more
    than ``bound`` bytes in all (``document_too_long``).
    """
    index = 0
    words: list[str] = []
    tags: list[str] = []
    size = 0
    started = False  # a token line of the current sentence was seen
    problem: str | None = None

    def finish() -> TaggedSentence | Dropped:
        sentence_id = f"{name}#{index}"
        if problem:
            return Dropped(sentence_id, problem)
        return TaggedSentence(sentence_id, tuple(words), tuple(tags))

    for line in lines:
        boundary = line is not LONG and (is_blank(line) or line.startswith(b"-DOCSTART-"))  # type: ignore[union-attr,arg-type]
        if boundary or (conllu and line is not LONG and _conllu_skipped(line)):  # type: ignore[arg-type]
            if boundary and started:
                yield finish()
                index += 1
                words, tags, size, started, problem = [], [], 0, False, None
            continue
        started = True
        if problem:
            continue
        if line is LONG:
            problem = accounting.DOCUMENT_TOO_LONG
            continue
        size += len(line) + 1  # type: ignore[arg-type]
        if size > bound + 1:
            problem = accounting.DOCUMENT_TOO_LONG
        else:
            try:
                text = line.decode("utf-8")  # type: ignore[union-attr]
            except UnicodeDecodeError:
                problem = accounting.INVALID_UTF8
                continue
            pair = _conll_columns(text, config.conll_token_column, config.conll_label_column)
            if pair is None:
                problem = accounting.INVALID_RECORD
            else:
                words.append(pair[0])
                tags.append(pair[1])
        if problem:
            words, tags = [], []
    if started:
        yield finish()


def _conll_columns(line: str, word_column: int, tag_column: int) -> tuple[str, str] | None:
    """``(word, tag)`` of one token line, or None when a column is missing or empty.

    >>> _conll_columns("EU\\tNNP\\tB-ORG", 0, -1), _conll_columns("EU B-ORG", 0, 2)
    (('EU', 'B-ORG'), None)
    """
    columns = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
    n = len(columns)
    tag_at = tag_column if tag_column >= 0 else n + tag_column
    if not (word_column < n and 0 <= tag_at < n) or tag_at == word_column:
        return None
    word, tag = columns[word_column], columns[tag_at]
    return (word, tag) if word and tag else None


def _conllu_skipped(line: bytes) -> bool:
    """CoNLL-U lines that are not tokens: comments, multi-word tokens (``1-2``), empty nodes (``1.1``)."""
    if line.startswith(b"#"):
        return True
    first = line.split(b"\t", 1)[0]
    return b"-" in first or b"." in first


# --------------------------------------------------------------------------------------------
# JSONL


def _json_record(record_id: str, line: bytes, config: InputConfig, *, tagged: bool) -> TaggedSentence | LabelledText | Dropped:
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return Dropped(record_id, accounting.INVALID_UTF8)
    except (ValueError, RecursionError):
        return Dropped(record_id, accounting.INVALID_JSON)
    if not isinstance(obj, dict):
        return Dropped(record_id, accounting.INVALID_JSON)
    # JSON can spell lone surrogates ("\ud800"), which no UTF-8 writer accepts.
    escaped = b"\\u" in line
    if tagged:
        return _tagged(record_id, obj.get(config.tokens_field), obj.get(config.tags_field), escaped=escaped)
    text = obj.get(config.text_field)
    pair = obj.get(config.text_pair_field) if config.text_pair_field else None
    if not isinstance(text, str) or (config.text_pair_field and not isinstance(pair, str)):
        return Dropped(record_id, accounting.MISSING_TEXT)
    return _labelled(record_id, text, pair, _label_text(obj.get(config.label_field)), escaped=escaped)


def _tagged(record_id: str, words: object, tags: object, *, escaped: bool) -> TaggedSentence | Dropped:
    if not (isinstance(words, list) and isinstance(tags, list)
            and all(isinstance(w, str) for w in words) and all(isinstance(t, str) for t in tags)):
        return Dropped(record_id, accounting.INVALID_RECORD)
    if len(words) != len(tags):
        return Dropped(record_id, accounting.LABEL_MISMATCH)
    if not words:
        return Dropped(record_id, accounting.EMPTY)
    stripped = tuple(t.strip() for t in tags)
    if not all(stripped):
        return Dropped(record_id, accounting.INVALID_RECORD)
    if escaped and not _encodable(*words, *stripped):
        return Dropped(record_id, accounting.INVALID_UTF8)
    return TaggedSentence(record_id, tuple(words), stripped)


def _label_text(value: object) -> str | None:
    """The label as text: strings (stripped, non-empty) and integers; None for anything else.

    Booleans are refused although Python counts them as integers: ``true`` in a label column
    is far more likely a wrong column than a class named "True".
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _labelled(record_id: str, text: str, pair: str | None, label: str | None, *,
              escaped: bool) -> LabelledText | Dropped:
    if label is None:
        return Dropped(record_id, accounting.INVALID_RECORD)
    if not text.strip() or (pair is not None and not pair.strip()):
        return Dropped(record_id, accounting.EMPTY)
    if escaped and not _encodable(text, pair or "", label):
        return Dropped(record_id, accounting.INVALID_UTF8)
    return LabelledText(record_id, text, pair, label)


def _encodable(*texts: str) -> bool:
    try:
        for t in texts:
            t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# CSV and TSV


def _positions(config: InputConfig, name: str) -> tuple[int, int | None, int]:
    """Column positions of a headerless CSV/TSV file; ``ConfigError`` for names."""
    def position(key: str, value: str) -> int:
        if not value.isdigit():
            raise ConfigError(
                f"input.{key}: {value!r} is a column name, but input.has_header is false (file "
                f"{name!r}); give a 0-based column position such as '0', or set has_header: true"
            )
        return int(value)

    pair = position("text_pair_field", config.text_pair_field) if config.text_pair_field else None
    return position("text_field", config.text_field), pair, position("label_field", config.label_field)


def _header_positions(header: list[str], config: InputConfig, url: str) -> tuple[int, int | None, int]:
    """Column positions from the header: a field is a column name, else a 0-based position."""
    names = [h.strip() for h in header]

    def position(key: str, value: str) -> int:
        if value in names:
            return names.index(value)
        if value.isdigit():
            return int(value)
        raise InputError(
            f"{url}: column {value!r} (input.{key}) is not in the header ({', '.join(map(repr, names))}); "
            f"set input.{key} to one of these names or to a 0-based position, or set "
            "input.has_header=false if the first row is data"
        )

    pair = position("text_pair_field", config.text_pair_field) if config.text_pair_field else None
    return position("text_field", config.text_field), pair, position("label_field", config.label_field)


def _delimited_items(
    f: IO[bytes], compression: str | None, file: InputFile, config: InputConfig, fmt: str,
    positions: tuple[int, int | None, int] | None, bound: int,
) -> Iterator[LabelledText | Dropped]:
    """Rows of a CSV or TSV file.

    CSV follows RFC 4180 (quoted fields may hold commas, doubled quotes and line breaks), as
    leniently as Python's ``csv`` module; TSV has no quoting at all (IANA
    ``text/tab-separated-values``): a row is a line, split at every tab, so a text may start
    with a quote character. Blank lines between rows are no record.
    """
    expected = f"a {fmt.upper()} file"
    if fmt == "csv":
        quotes = QuoteTracker()
        lines = text_lines(f, compression, bound, expected=expected, observe_long=quotes.observe_long)
        records: Iterator[bytes | object] = csv_records(lines, quotes, bound)
    else:
        records = (line for line in text_lines(f, compression, bound, expected=expected)
                   if line is LONG or not is_blank(line))  # type: ignore[arg-type]
    index = 0
    for record in records:
        if positions is None:
            positions = _header_positions(_header(record, fmt), config, file.url)
            continue
        record_id = f"{file.name}#{index}"
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
        fields = csv_fields(text) if fmt == "csv" else text.split("\t")
        at_text, at_pair, at_label = positions
        if max(at_text, at_label, -1 if at_pair is None else at_pair) >= len(fields):
            yield Dropped(record_id, accounting.INVALID_RECORD)
            continue
        pair = None if at_pair is None else fields[at_pair]
        yield _labelled(record_id, fields[at_text], pair, _label_text(fields[at_label]), escaped=False)


def _header(record: bytes | object, fmt: str) -> list[str]:
    if not isinstance(record, bytes):
        what = "longer than the record bound" if record is LONG else "an unclosed quote"
        raise BadFile(accounting.FILE_CORRUPT, f"the header row has {what}")
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFile(accounting.FILE_CORRUPT, "the header row is not valid UTF-8") from None
    return csv_fields(text) if fmt == "csv" else text.split("\t")


# --------------------------------------------------------------------------------------------
# Parquet

#: Stands for a string value that is not valid UTF-8.
_INVALID = object()


def _parquet_items(f: IO[bytes], file: InputFile, config: InputConfig, bound: int) -> Iterator[LabelledText | Dropped]:
    """Rows of a Parquet file, a batch of the needed columns at a time."""
    pf = open_parquet(f)
    schema = pf.schema_arrow
    wanted = [("text_field", config.text_field), ("label_field", config.label_field)]
    if config.text_pair_field:
        wanted.append(("text_pair_field", config.text_pair_field))
    for key, column in wanted:
        if column not in schema.names:
            raise InputError(
                f"{file.url}: no column {column!r} (input.{key}); the columns are "
                f"{', '.join(map(repr, schema.names))}: set input.{key} to one of them"
            )
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):  # e.g. a pandas categorical
            kind = kind.value_type
        ok = _is_text_type(kind) or (key == "label_field" and pa.types.is_integer(kind))
        if not ok:
            accepted = "string or integer" if key == "label_field" else "string"
            raise InputError(f"{file.url}: column {column!r} (input.{key}) has type {kind}, not {accepted}; "
                             f"set input.{key} to a {accepted} column")
    columns = list(dict.fromkeys(column for _, column in wanted))
    index = 0
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            texts = _values(batch.column(config.text_field))
            pairs = _values(batch.column(config.text_pair_field)) if config.text_pair_field else None
            labels = _values(batch.column(config.label_field))
        except Exception as exc:
            if not is_parquet_damage(exc):
                raise
            raise BadFile(accounting.FILE_CORRUPT, f"unreadable Parquet data after row {index} ({exc})") from None
        for row, (text, label) in enumerate(zip(texts, labels)):
            record_id = f"{file.name}#{index}"
            index += 1
            pair = None if pairs is None else pairs[row]
            if text is None or (pairs is not None and pair is None):
                yield Dropped(record_id, accounting.MISSING_TEXT)
            elif text is _INVALID or pair is _INVALID or label is _INVALID:
                yield Dropped(record_id, accounting.INVALID_UTF8)
            elif longer_than(text, bound) or (pair is not None and longer_than(pair, bound)):  # type: ignore[arg-type]
                yield Dropped(record_id, accounting.DOCUMENT_TOO_LONG)
            else:
                yield _labelled(record_id, text, pair, _label_text(label), escaped=False)  # type: ignore[arg-type]


def _is_text_type(kind: pa.DataType) -> bool:
    return any(check(kind) for check in (pa.types.is_string, pa.types.is_large_string,
                                         pa.types.is_binary, pa.types.is_large_binary))


def _values(column: pa.Array) -> list[object]:
    """Python values of a column; binary and invalid UTF-8 strings decoded strictly, else ``_INVALID``."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if _is_text_type(column.type) and not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        try:
            return column.to_pylist()
        except UnicodeDecodeError:
            pass
        column = column.cast(pa.large_binary())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return [_decode(v) for v in column.to_pylist()]
    return column.to_pylist()


def _decode(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return _INVALID
