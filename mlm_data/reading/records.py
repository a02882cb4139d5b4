"""Records as columns: the types every reader view shares, and the rules for their values.

``record_reader`` reads files; this module says what it reads them into. A *view* (documents,
labelled texts, tagged sentences) is a ``RecordView``: the ``Column``s it needs, each with a
kind (``TEXT``, ``LABEL`` or ``WORDS``), and how to build its item. ``checker`` is the one
place that decides when a record's values are unusable and why, for every format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from mlm_data import accounting
from mlm_data.reading.byte_streams import BadFile

T = TypeVar("T")

#: Column kinds: a string; a string or an integer (a label, kept as text); a list of strings.
TEXT, LABEL, WORDS = "text", "label", "words"
#: Stand for a value that is not valid UTF-8, and for a text longer than the reader's bound:
#: Parquet, whose records are not bounded line by line, marks such values for ``checker``.
INVALID, TOO_LONG = object(), object()


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
    """``accounting.FILE_EMPTY``, ``FILE_BINARY``, ``FILE_CORRUPT`` or ``FILE_COLUMNS``."""
    detail: str
    """What was found, for people: ``"corrupt gzip stream (ends early after 1048576 bytes)"``."""


@dataclass(frozen=True)
class Column:
    field: str
    """The ``InputConfig`` field that names the column, for messages: ``"text_field"``."""
    name: str
    """Its JSONL key, Parquet column, or CSV/TSV header name or 0-based position."""
    kind: str
    """``TEXT``, ``LABEL`` or ``WORDS``: what each value must be."""


@dataclass(frozen=True)
class RecordView(Generic[T]):
    """What a reader of records wants from a file: its columns and how to build an item."""

    noun: str
    """What the records are for, in messages: "input.format: 'conll' is not a {noun} format"."""
    columns: tuple[Column, ...]
    make: Callable[..., T | Dropped]
    """``make(id, *values)``: the item for one record whose values passed ``checker`` (labels
    as stripped text, word lists as tuples), or a ``Dropped`` for the view's own rules."""


def missing_column(column: Column, present: Sequence[str]) -> BadFile:
    """The bad file for a configured column that the schema or header lacks."""
    return BadFile(
        accounting.FILE_COLUMNS,
        f"no column {column.name!r} (input.{column.field}); the columns are {', '.join(map(repr, present))}",
        fix=f"set input.{column.field} to one of them",
    )


def wrong_column_type(column: Column, found: object) -> BadFile:
    accepted = {TEXT: "string", LABEL: "string or integer", WORDS: "list of strings"}[column.kind]
    return BadFile(
        accounting.FILE_COLUMNS,
        f"column {column.name!r} (input.{column.field}) has type {found}, not {accepted}",
        fix=f"set input.{column.field} to a {accepted} column",
    )


def checker(columns: Sequence[Column]) -> Callable[[tuple], tuple | str]:
    """``check(values)``: the values ready for ``RecordView.make``, or the reason to drop them.

    Reasons in order of precedence: a text that is absent or not a string (``missing_text``),
    a value that is not valid UTF-8 (``invalid_utf8``), a text over the reader's bound
    (``document_too_long``), a label that is neither a non-empty string nor an integer or a
    word list that is not a list of strings (``invalid_record``), a text of only whitespace
    (``empty``). Labels come back stripped (integers as ``str(value)``), word lists as tuples.
    """
    kinds = tuple(c.kind for c in columns)
    return _check_text if kinds == (TEXT,) else partial(_check, kinds)


def _check_text(values: tuple) -> tuple | str:
    text = values[0]
    if not isinstance(text, str):
        return _MARKED.get(text, accounting.MISSING_TEXT)
    if not text or text.isspace():
        return accounting.EMPTY
    return values


_MARKED = {INVALID: accounting.INVALID_UTF8, TOO_LONG: accounting.DOCUMENT_TOO_LONG}


def _check(kinds: tuple[str, ...], values: tuple) -> tuple | str:
    out = []
    missing = invalid = too_long = unusable = empty = False
    for value, kind in zip(values, kinds):
        if value is INVALID:
            invalid = True
        elif value is TOO_LONG:
            too_long = True
        elif kind == TEXT:
            if not isinstance(value, str):
                missing = True
            elif not value or value.isspace():
                empty = True
        else:
            value = label_text(value) if kind == LABEL else _words(value)
            unusable = unusable or value is None
        out.append(value)
    for problem, reason in ((missing, accounting.MISSING_TEXT), (invalid, accounting.INVALID_UTF8),
                            (too_long, accounting.DOCUMENT_TOO_LONG), (unusable, accounting.INVALID_RECORD),
                            (empty, accounting.EMPTY)):
        if problem:
            return reason
    return tuple(out)


def label_text(value: object) -> str | None:
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


def _words(value: object) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value):
        return tuple(value)
    return None


def encodable(values: tuple) -> bool:
    """Whether every string in ``values`` can be written as UTF-8 (JSON can spell lone
    surrogates, ``"\\ud800"``, which no UTF-8 writer accepts)."""
    try:
        for value in values:
            for text in (value,) if isinstance(value, str) else value or ():
                text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
