"""CSV records in bounded memory: where a record ends when quoted fields may span lines.

Python's ``csv`` reads a whole record before it can be checked, however long; so the record
*boundaries* are found here, from the bounded lines of ``byte_streams`` (a record over the
bound is followed to its end but never held), and only a record within the bound is handed
to ``csv`` for its fields.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from mlm_data.reading.byte_streams import LONG, is_blank

_FIELD_START, _UNQUOTED, _QUOTED = 0, 1, 2
#: Stands for a CSV record whose quoted field is still open at the end of the file.
UNTERMINATED = object()


class QuoteTracker:
    """Follows CSV quoting (RFC 4180, as leniently as Python's ``csv``) across lines.

    Python's ``csv`` reader (excel dialect, ``strict=False``) has more states, but for where a
    record ends only three matter: at a field start, inside an unquoted field, inside a quoted
    one. Just after a closing quote behaves like a field start ('"' reopens the field: a
    doubled quote; ',' ends it; anything else continues it unquoted), so it needs no state of
    its own. A line break ends the record unless a quoted field is open. The tracker sees only
    bytes: '"' and ',' are ASCII, so UTF-8 (even invalid) cannot hide them.
    """

    def __init__(self) -> None:
        self.state = _FIELD_START
        self.saw_long = False

    def feed(self, data: bytes) -> None:
        state, i, n = self.state, 0, len(data)
        while i < n:
            if state == _QUOTED:
                j = data.find(b'"', i)
                if j < 0:
                    break
                state, i = _FIELD_START, j + 1
            elif state == _UNQUOTED:
                j = data.find(b",", i)
                if j < 0:
                    break
                state, i = _FIELD_START, j + 1
            else:
                c = data[i]
                i += 1
                state = _QUOTED if c == 0x22 else _FIELD_START if c == 0x2C else _UNQUOTED
        self.state = state

    def observe_long(self, piece: bytes) -> None:
        """``lines(observe_long=...)``: follow the quotes of a line too long to be kept."""
        self.saw_long = True
        self.feed(piece)

    def end_line(self) -> bool:
        """At a line break: True (and back to a field start) when it ends the record."""
        if self.state == _QUOTED:
            return False
        self.state = _FIELD_START
        return True


def csv_records(lines: Iterator[bytes | object], quotes: QuoteTracker, bound: int) -> Iterator[bytes | object]:
    """CSV records from ``lines(..., observe_long=quotes.observe_long)``.

    Yields each record as bytes (its lines joined by "\\n", so a line break inside a quoted
    field reads "\\n"), ``LONG`` for a record over ``bound`` bytes (which is followed to its
    end but never held), and ``UNTERMINATED`` for a quoted field still open at the end of the
    file. Blank lines between records are no record. Unlike Python's ``csv``, only "\n" breaks
    lines (as everywhere in this project): a lone "\r" is an ordinary character.
    """
    parts: list[bytes] = []
    size = 0
    in_record = too_long = False
    for line in lines:
        observed, quotes.saw_long = quotes.saw_long, False
        if not observed:
            quotes.feed(line)  # type: ignore[arg-type]
        if not in_record and line is not LONG and is_blank(line):  # type: ignore[arg-type]
            quotes.end_line()
            continue
        in_record = True
        if observed or line is LONG:
            too_long = True
        elif not too_long:
            size += len(line) + 1  # type: ignore[arg-type]
            too_long = size > bound + 1
            parts.append(line)  # type: ignore[arg-type]
        if too_long:
            parts = []
        if quotes.end_line():
            yield LONG if too_long else b"\n".join(parts)
            parts, size, in_record, too_long = [], 0, False, False
    if in_record:
        yield UNTERMINATED


def csv_fields(record: str) -> list[str]:
    """The fields of one CSV record (from ``csv_records``), unquoted by Python's ``csv``.

    >>> csv_fields('a,"b, ""c""\\nd",e"f,"g"h')
    ['a', 'b, "c"\\nd', 'e"f', 'gh']

    ``csv`` treats a carriage return outside quotes as a line break, and refuses more text
    after it; here only "\\n" breaks lines (see ``csv_records``), so a lone "\\r" is hidden
    behind a character the record does not hold while ``csv`` reads it. ``csv`` refuses fields
    over its (process-wide) size limit; records here are already bounded by the reader, so the
    limit is raised to the record's length when it is in the way.
    """
    if len(record) > csv.field_size_limit():
        csv.field_size_limit(len(record))
    if "\r" not in record:
        return next(csv.reader((record,)), [])
    stand_in = next(c for c in map(chr, range(0xE000, 0x110000)) if c not in record)
    fields = next(csv.reader((record.replace("\r", stand_in),)), [])
    return [field.replace(stand_in, "\r") for field in fields]
