"""Where every document went: the reasons a document can be dropped, and their tallies.

The manifest promises ``documents_read == documents_written + sum(documents_dropped.values())``.
Each stage reports drops with one of the reasons below (a fixed vocabulary, so manifests from
different runs compare), and ``Counts`` adds them up in any order, on any worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

# Reading
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
#: Valid JSON nested deeper than Python's parser recurses (e.g. 100,000 opening brackets).
JSON_TOO_DEEP = "json_too_deep"
MISSING_TEXT = "missing_text"
EMPTY = "empty"
# Cleaning and filtering
DOCUMENT_TOO_SHORT = "document_too_short"
DOCUMENT_TOO_LONG = "document_too_long"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
#: Quality filter rules, named after their ``filters.*`` config fields (a test checks they
#: agree); a document failing one is counted as ``filter.<rule>``.
FILTER_RULES = (
    "min_words", "max_words", "min_mean_word_length", "max_mean_word_length", "min_alpha_fraction",
    "max_symbol_fraction", "min_lines_ending_in_punctuation", "max_duplicate_line_fraction",
    "max_duplicate_line_char_fraction", "max_duplicate_paragraph_fraction",
    "max_duplicate_paragraph_char_fraction", "max_top_ngram_char_fraction",
    "max_duplicate_ngram_char_fraction", "min_stop_words", "languages",
)
FILTER_REASONS = tuple(f"filter.{rule}" for rule in FILTER_RULES)
# Instance creation
NO_TOKENS = "no_tokens"
NO_INSTANCES = "no_instances"
# Labelled data
LABEL_MISMATCH = "label_count_mismatch"
UNKNOWN_LABEL = "unknown_label"
INVALID_RECORD = "invalid_record"

DROP_REASONS = (
    INVALID_UTF8, INVALID_JSON, JSON_TOO_DEEP, MISSING_TEXT, EMPTY, DOCUMENT_TOO_SHORT, DOCUMENT_TOO_LONG,
    DUPLICATE, NEAR_DUPLICATE, *FILTER_REASONS, NO_TOKENS, NO_INSTANCES, LABEL_MISMATCH, UNKNOWN_LABEL,
    INVALID_RECORD,
)

# Pieces of kept documents that could not become part of a row (a chunk is one or more whole
# sentences; the manifest counts them with their tokens under ``chunks_dropped``)
NO_PAIR_PARTNER = "no_pair_partner"
"""A one-sentence chunk of a BERT-pairs document whose window held no segment of another
document to pair it with (it has no true continuation either)."""

# File-level outcomes (a file is not a document: these are listed by name in the manifest)
FILE_EMPTY = "empty_file"
FILE_BINARY = "binary_file"
FILE_CORRUPT = "corrupt_file"
#: A Parquet schema or CSV/TSV header without a configured column, or with it of the wrong type.
FILE_COLUMNS = "column_mismatch"


@dataclass
class Counts:
    """Mutable tallies for one worker's share of the work; merge them with ``+``."""

    read: int = 0
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        self.dropped[reason] += n

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.read + other.read, self.written + other.written, self.dropped + other.dropped)

    def as_manifest(self) -> dict[str, object]:
        return {
            "documents_read": self.read,
            "documents_written": self.written,
            "documents_dropped": {k: self.dropped[k] for k in sorted(self.dropped) if self.dropped[k]},
        }

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        out = cls()
        for p in parts:
            out = out + p
        return out

    def balanced(self) -> bool:
        return self.read == self.written + sum(self.dropped.values())
