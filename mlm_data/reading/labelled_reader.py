"""Labelled input files to records: tagged sentences and labelled texts, every slot counted.

``read_labelled`` is the labelled-data view of ``record_reader``, with its one set of rules
(ids, drop reasons, bad files and missing columns, bounded memory). The view decides which
columns a task needs and what makes a record:

* token classification: two word lists, ``input.tokens_field`` and ``input.tags_field``
  (CoNLL: the ``conll_token_column`` and ``conll_label_column`` of each token line), one tag
  per word: ``TaggedSentence``;
* sequence classification: a text, an optional second text (``input.text_pair_field``) and a
  label (``input.label_field``; a string or an integer): ``LabelledText``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError
from mlm_data.reading.input_files import InputFile
from mlm_data.reading.record_reader import formats_for, read_records
from mlm_data.reading.records import LABEL, TEXT, WORDS, Column, Dropped, FileProblem, RecordView

TOKENS, TEXTS = "token_classification", "sequence_classification"


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


def _tagged(record_id: str, words: tuple[str, ...], tags: tuple[str, ...]) -> TaggedSentence | Dropped:
    if len(words) != len(tags):
        return Dropped(record_id, accounting.LABEL_MISMATCH)
    if not words:
        return Dropped(record_id, accounting.EMPTY)
    stripped = tuple(t.strip() for t in tags)
    if not all(stripped):
        return Dropped(record_id, accounting.INVALID_RECORD)
    return TaggedSentence(record_id, words, stripped)


def _text(record_id: str, text: str, label: str) -> LabelledText:
    return LabelledText(record_id, text, None, label)


def view(config: InputConfig, task: str) -> RecordView:
    """The columns ``task`` reads and how its records are made."""
    if task == TOKENS:
        return RecordView(task, (Column("tokens_field", config.tokens_field, WORDS),
                                 Column("tags_field", config.tags_field, WORDS)), _tagged)
    if task != TEXTS:
        raise ConfigError(f"instances.task: {task!r} has no labelled input; use one of {TOKENS}, {TEXTS}")
    text = Column("text_field", config.text_field, TEXT)
    label = Column("label_field", config.label_field, LABEL)
    if config.text_pair_field:
        return RecordView(task, (text, Column("text_pair_field", config.text_pair_field, TEXT), label),
                          LabelledText)
    return RecordView(task, (text, label), _text)


#: The formats each labelled task reads.
FORMATS = {task: formats_for(view(InputConfig(), task).columns) for task in (TOKENS, TEXTS)}


def read_labelled(file: InputFile, config: InputConfig, *, task: str,
                  max_document_chars: int) -> Iterator[LabelledItem]:
    """Stream ``file`` as labelled records of ``task``, one item per record slot.

    A format the task does not read, and CSV/TSV column names that cannot be positions in a
    file without a header, raise ``ConfigError`` at the call, before anything is read.
    Records over ``4 * max_document_chars`` bytes (a CoNLL sentence: all its lines) are
    dropped as ``document_too_long`` without ever being held whole.
    """
    return read_records(file, config, view(config, task), bound=4 * max_document_chars)
