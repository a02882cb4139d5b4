"""Input files to documents: records with one text column, every document slot counted.

``read_documents`` is the text-corpus view of ``record_reader``: each record's text column
(``input.text_field``; plain text files are that one column) is a ``Document``, and every
other outcome is a ``Dropped`` with a reason or a ``FileProblem`` for the whole file, under
the reader's one set of rules (ids, drop reasons, bad files, bounded memory). Listing files
and telling their format is ``input_files``'s job; its names are re-exported here for the
callers that import them from this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mlm_data.config.preprocess import InputConfig
from mlm_data.reading.input_files import InputFile, detect_format, list_input_files
from mlm_data.reading.record_reader import formats_for, read_records
from mlm_data.reading.records import TEXT, Column, Dropped, FileProblem, RecordView

__all__ = [
    "Document", "Dropped", "FileProblem", "InputFile", "ReadItem", "TEXT_FORMATS",
    "detect_format", "list_input_files", "read_documents",
]


@dataclass(frozen=True)
class Document:
    id: str
    """``f"{file.name}#{index}"``; ``index`` counts document slots, dropped ones included."""
    text: str


ReadItem = Document | Dropped | FileProblem

#: The formats a text corpus can be read from.
TEXT_FORMATS = formats_for([Column("text_field", "text", TEXT)])


def read_documents(file: InputFile, config: InputConfig, *, max_document_chars: int) -> Iterator[ReadItem]:
    """Stream ``file`` as documents, one ``Document`` or ``Dropped`` per document slot.

    Slots are numbered in file order and the number is part of the id, so an id means the same
    document in every run. An empty file yields one ``FileProblem(FILE_EMPTY)``. A binary or
    corrupt file, or one without the text column, raises ``InputError``
    (``on_bad_file="fail"``) or yields a ``FileProblem`` and ends (``"skip"``); documents
    yielded before the damage was found are valid and stand. Documents over
    ``4 * max_document_chars`` bytes are dropped without ever being held whole.

    A format that cannot hold a text column (CoNLL) raises ``ConfigError`` at the call, before
    anything is read; everything else is found while iterating.
    """
    view = RecordView("text-corpus", (Column("text_field", config.text_field, TEXT),), Document)
    return read_records(file, config, view, bound=4 * max_document_chars)
