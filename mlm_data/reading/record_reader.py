"""One reader for records of any shape: every input format, read as named columns.

A *view* (documents in ``document_reader``; labelled texts and tagged sentences in
``labelled_reader``) names the columns it needs, each a ``Column`` (the config field that
names it, its name or 0-based position in the file, and the kind of value it must hold), and
says how to build its item from their values. ``read_records`` streams one file, in any
format that can hold those columns, and yields in file order the view's item or a ``Dropped``
for every record slot, and a ``FileProblem`` when the file as a whole is bad. One set of rules
for every format and every view:

* Ids are ``f"{file.name}#{index}"``; ``index`` counts record slots, dropped ones included,
  so an id names the same record in every run.
* A record whose value is missing or of the wrong kind is dropped with a reason, never an
  error: a text that is absent or not a string is ``missing_text``; a label or word list that
  is unusable is ``invalid_record``; then come ``invalid_utf8``, ``document_too_long`` and
  ``empty`` (see ``checker``).
* A file whose schema (Parquet) or header (CSV/TSV) lacks a column, or has it with a type that
  cannot hold its kind, is a bad file (``column_mismatch``), like a binary or corrupt one:
  ``input.on_bad_file: fail`` (the default) stops the run with one line naming the file, the
  column and the columns it has; ``skip`` lists it under ``files.problems``. An empty file is
  always only listed. (JSONL has no schema: there a missing key is the record's problem.)
* Dictionary-encoded columns (what pandas categoricals become) read as their values.
* Memory is bounded by the read chunk plus ``bound`` bytes per record, whatever the file
  holds: a longer record is dropped as ``document_too_long`` without being held whole.

Which formats hold which columns: plain text holds one text column (documents separated by
blank lines, or one per line); CoNLL holds two word lists (words and tags, by position);
JSONL and Parquet hold any named columns; CSV and TSV hold named or numbered text columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

from mlm_data import accounting, storage
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading import line_records, table_records
from mlm_data.reading.byte_streams import BadFile
from mlm_data.reading.input_files import InputFile, detect_format, stream_compression
from mlm_data.reading.records import TEXT, WORDS, Column, Dropped, FileProblem, RecordView

T = TypeVar("T")
_SKIP_FIX = "or set input.on_bad_file=skip to skip it"
_EXTENSIONS = {"text": ("txt", "text"), "jsonl": ("jsonl", "json", "ndjson"), "parquet": ("parquet",),
               "csv": ("csv",), "tsv": ("tsv",), "conll": ("conll", "conllu", "bio", "iob")}


def formats_for(columns: Sequence[Column]) -> tuple[str, ...]:
    """The formats that can hold ``columns``."""
    kinds = [c.kind for c in columns]
    if kinds == [TEXT]:
        return ("text", "jsonl", "parquet", "csv", "tsv")
    if WORDS in kinds:
        return ("conll", "jsonl", "parquet") if kinds == [WORDS, WORDS] else ("jsonl", "parquet")
    return ("jsonl", "parquet", "csv", "tsv")


def read_records(file: InputFile, config: InputConfig, view: RecordView[T], *,
                 bound: int) -> Iterator[T | Dropped | FileProblem]:
    """Stream ``file`` as records of ``view``, one item per record slot (see the module doc).

    A format that cannot hold the view's columns, and a configuration the format cannot follow
    (column names in a file without a header), raise ``ConfigError`` at the call, before
    anything is read; everything else is found while iterating.
    """
    fmt = detect_format(file.name, config.format)
    formats = formats_for(view.columns)
    if fmt not in formats:
        extensions = [ext for f in formats for ext in _EXTENSIONS[f]]
        raise ConfigError(
            f"input.format: {fmt!r} (file {file.name!r}) is not a {view.noun} format; use one of "
            f"{', '.join(formats)} (or 'auto' with the extensions .{', .'.join(extensions)})"
        )
    compression = stream_compression(file, fmt)
    sources = line_records if fmt in line_records.FORMATS else table_records
    items = sources.source(fmt, file, config, view, compression=compression, bound=bound)
    return read_guarded(file, config.on_bad_file, items)


def read_guarded(
    file: InputFile, on_bad_file: str, items: Callable[[IO[bytes]], Iterator[T]]
) -> Iterator[T | FileProblem]:
    """Open ``file`` and yield ``items(f)``, turning whole-file problems into the policy's outcome.

    A ``BadFile`` ends the file: an empty file is always a ``FileProblem``; any other bad file
    raises ``InputError`` (one line: the file, what was found, the fix) unless
    ``on_bad_file="skip"``, when it is a ``FileProblem`` too. Items already yielded stand.
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


