"""Records from line-oriented files: plain text, JSONL and CoNLL.

Each reads the bounded lines of ``byte_streams`` (so a line longer than the bound is skipped
as it streams past and its record counted as ``document_too_long``) and hands the view one
tuple of values per record slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError
from mlm_data.reading.byte_streams import LONG, is_blank, text_lines
from mlm_data.reading.input_files import InputFile, format_extension
from mlm_data.reading.records import Dropped, RecordView, checker, encodable

T = TypeVar("T")

FORMATS = ("text", "jsonl", "conll")
_EXPECTED = {"text": "a text file", "jsonl": "a JSONL file", "conll": "a CoNLL file"}


def source(fmt: str, file: InputFile, config: InputConfig, view: RecordView[T], *, compression: str | None,
           bound: int) -> Callable[[IO[bytes]], Iterator[T | Dropped]]:
    """``items(f)`` for one file of ``fmt``; configuration the format cannot follow raises
    ``ConfigError`` now, before anything is read."""
    if fmt == "conll" and config.conll_label_column == config.conll_token_column:
        raise ConfigError(
            f"input.conll_label_column: {config.conll_label_column} is also input.conll_token_column; "
            "the tag must come from another column"
        )

    def items(f: IO[bytes]) -> Iterator[T | Dropped]:
        lines = text_lines(f, compression, bound, expected=_EXPECTED[fmt])
        if fmt == "jsonl":
            return _jsonl(lines, file.name, view)
        if fmt == "conll":
            conllu = format_extension(file.name) == "conllu"
            return _conll(lines, file.name, config, view, bound, conllu=conllu)
        if config.document_boundary == "line":
            return _lines(lines, file.name, view)
        return _paragraphs(lines, file.name, view, bound)

    return items


# --------------------------------------------------------------------------------------------
# Plain text: one text column; a record never holds a blank line, so it is never empty


def _paragraphs(lines: Iterator[bytes | object], name: str, view: RecordView[T], bound: int) -> Iterator[T | Dropped]:
    make = view.make
    index = 0
    doc: list[bytes] = []
    size = 0
    too_long = False

    def finish() -> T | Dropped:
        record_id = f"{name}#{index}"
        if too_long:
            return Dropped(record_id, accounting.DOCUMENT_TOO_LONG)
        return _decoded(record_id, b"\n".join(doc), make)

    for line in lines:
        if line is LONG:
            too_long, doc, size = True, [], 0
            continue
        # is_blank(line), with its ASCII answers inline: this runs once per line of the corpus.
        if not line or line.isspace() or (not line.isascii() and is_blank(line)):  # type: ignore[union-attr,arg-type]
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


def _lines(lines: Iterator[bytes | object], name: str, view: RecordView[T]) -> Iterator[T | Dropped]:
    make = view.make
    index = 0
    for line in lines:
        if line is LONG:
            yield Dropped(f"{name}#{index}", accounting.DOCUMENT_TOO_LONG)
        elif not line or line.isspace() or (not line.isascii() and is_blank(line)):  # type: ignore[union-attr,arg-type]
            continue  # a blank line (is_blank, its ASCII answers inline as above)
        else:
            yield _decoded(f"{name}#{index}", line, make)  # type: ignore[arg-type]
        index += 1


def _decoded(record_id: str, raw: bytes, make: Callable[..., T | Dropped]) -> T | Dropped:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Dropped(record_id, accounting.INVALID_UTF8)
    return make(record_id, text)


# --------------------------------------------------------------------------------------------
# JSONL: any named columns, one object per non-blank line


def _jsonl(lines: Iterator[bytes | object], name: str, view: RecordView[T]) -> Iterator[T | Dropped]:
    """Ids count records, not blank lines; a line over the bound (``LONG``) is dropped as
    ``document_too_long`` and still takes its index, so later ids do not shift."""
    keys = tuple(c.name for c in view.columns)
    check, make = checker(view.columns), view.make
    index = 0
    for line in lines:
        record_id = f"{name}#{index}"
        if line is LONG:
            yield Dropped(record_id, accounting.DOCUMENT_TOO_LONG)
        elif not line or line.isspace():  # type: ignore[union-attr]
            continue
        else:
            yield _json_record(record_id, line, keys, check, make)  # type: ignore[arg-type]
        index += 1


def _json_record(record_id: str, line: bytes, keys: tuple[str, ...], check: Callable[[tuple], tuple | str],
                 make: Callable[..., T | Dropped]) -> T | Dropped:
    try:
        obj = json_value(line.decode("utf-8"))
    except UnicodeDecodeError:
        return Dropped(record_id, accounting.INVALID_UTF8)
    except RecursionError:
        return Dropped(record_id, accounting.JSON_TOO_DEEP)
    except ValueError:
        return Dropped(record_id, accounting.INVALID_JSON)
    if not isinstance(obj, dict):
        return Dropped(record_id, accounting.INVALID_JSON)
    values = check((obj.get(keys[0]),) if len(keys) == 1 else tuple(map(obj.get, keys)))
    if isinstance(values, str):
        return Dropped(record_id, values)
    if b"\\u" in line and not encodable(values):
        return Dropped(record_id, accounting.INVALID_UTF8)
    return make(record_id, *values)


_scan_json = json.JSONDecoder().scan_once


def json_value(text: str) -> object:
    """``json.loads(text)``: the C scanner directly when ``text`` is exactly one JSON value
    (nearly every JSONL line), skipping ``loads``'s Python layers; ``loads`` itself judges
    anything else (surrounding whitespace, errors), so the outcome is always exactly its own.
    """
    try:
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except StopIteration:
        pass
    return json.loads(text)


# --------------------------------------------------------------------------------------------
# CoNLL: two word-list columns (words and tags) taken from each token line by position


def _conll(lines: Iterator[bytes | object], name: str, config: InputConfig, view: RecordView[T], bound: int, *,
           conllu: bool) -> Iterator[T | Dropped]:
    """Sentences of a one-token-per-line file.

    Columns are tab-separated when the line holds a tab, else whitespace-separated. A blank
    line or a ``-DOCSTART-`` line ends a sentence; ``-DOCSTART-`` lines are no record. In
    CoNLL-U (``.conllu``) ``#`` comment lines and multi-word token / empty node lines (ids
    like ``1-2`` and ``1.1``) are skipped too. A sentence keeps the first problem found in
    it: a line without the word or tag column (``invalid_record``), invalid UTF-8, or more
    than ``bound`` bytes in all (``document_too_long``).
    """
    make = view.make
    index = 0
    words: list[str] = []
    tags: list[str] = []
    size = 0
    started = False  # a token line of the current sentence was seen
    problem: str | None = None

    def finish() -> T | Dropped:
        sentence_id = f"{name}#{index}"
        if problem:
            return Dropped(sentence_id, problem)
        return make(sentence_id, tuple(words), tuple(tags))

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
            pair = conll_columns(text, config.conll_token_column, config.conll_label_column)
            if pair is None:
                problem = accounting.INVALID_RECORD
            else:
                words.append(pair[0])
                tags.append(pair[1])
        if problem:
            words, tags = [], []
    if started:
        yield finish()


def conll_columns(line: str, word_column: int, tag_column: int) -> tuple[str, str] | None:
    """``(word, tag)`` of one token line, or None when a column is missing or empty.

    >>> conll_columns("EU\\tNNP\\tB-ORG", 0, -1), conll_columns("EU B-ORG", 0, 2)
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
