"""The dataset's Arrow schema: one explicit, versioned layout per task.

We store what the loader cannot derive and nothing else. Token ids use the smallest unsigned
type that fits the vocabulary; attention masks, token type ids and padding are derived at load
time from ``input_ids`` and ``segment_b_start``.

Column meanings (every list column is per row):

==========================  ==========================================================
``input_ids``               the full sequence, special tokens included
``word_start``              True where a token begins a word (specials are one-token words);
                            whole-word and span masking read this, so they work for any
                            tokenizer, not only WordPiece ``##``
``segment_b_start``         index of the first token of segment B (token type 1 from here)
``next_sentence_label``     0: B continues A in the source; 1: B is from another document
                            (the convention of HF ``BertForPreTraining``)
``masked_positions``        static masking only: positions chosen for prediction
``masked_labels``           static masking only: the original ids at those positions
``document_starts``         causal LM: offsets in the block where a new document begins
``labels``                  token classification: label id per token, -100 = not scored
``example_id``              token classification: stable id of the source sentence
``window_index``            token classification: 0, 1, ... for the windows of one sentence
``label``                   sequence classification: the class id
==========================  ==========================================================
"""

from __future__ import annotations

import pyarrow as pa

from mlm_data.errors import DatasetError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
IGNORE_INDEX = -100
"""Label of positions that are not predicted (what ``torch.nn.CrossEntropyLoss`` ignores)."""

TASKS = (
    "mlm_nsp",
    "mlm_fullsent",
    "mlm_docsent",
    "causal_lm",
    "token_classification",
    "sequence_classification",
)
#: Tasks whose rows are trained with masked-language-model loss.
MLM_TASKS = ("mlm_nsp", "mlm_fullsent", "mlm_docsent")
#: Tasks read from labelled records (with a label vocabulary) rather than text corpora.
LABELLED_TASKS = ("token_classification", "sequence_classification")

_META_VERSION = b"mlm_data.schema_version"
_META_TASK = b"mlm_data.task"


def id_type_for(vocab_size: int) -> pa.DataType:
    """``uint16`` when every id fits, else ``uint32``.

    >>> id_type_for(30522), id_type_for(65536), id_type_for(65537)
    (DataType(uint16), DataType(uint16), DataType(uint32))
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def schema_for(task: str, *, vocab_size: int, static_masking: bool = False) -> pa.Schema:
    """The Arrow schema of a shard for ``task``."""
    ids = id_type_for(vocab_size)
    fields: list[pa.Field] = [pa.field("input_ids", pa.list_(ids), nullable=False)]
    if task in MLM_TASKS or task == "token_classification":
        fields.append(pa.field("word_start", pa.list_(pa.bool_()), nullable=False))
    if task == "mlm_nsp":
        fields.append(pa.field("segment_b_start", pa.uint16(), nullable=False))
        fields.append(pa.field("next_sentence_label", pa.int8(), nullable=False))
    if task in MLM_TASKS and static_masking:
        fields.append(pa.field("masked_positions", pa.list_(pa.uint16()), nullable=False))
        fields.append(pa.field("masked_labels", pa.list_(ids), nullable=False))
    if task == "causal_lm":
        fields.append(pa.field("document_starts", pa.list_(pa.uint16()), nullable=False))
    if task == "token_classification":
        fields.append(pa.field("labels", pa.list_(pa.int16()), nullable=False))
        fields.append(pa.field("example_id", pa.uint64(), nullable=False))
        fields.append(pa.field("window_index", pa.uint16(), nullable=False))
    if task == "sequence_classification":
        fields.append(pa.field("segment_b_start", pa.uint16(), nullable=True))
        fields.append(pa.field("label", pa.int32(), nullable=False))
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return pa.schema(fields, metadata={_META_VERSION: str(SCHEMA_VERSION).encode(), _META_TASK: task.encode()})


def check_schema_version(version: object, *, source: str) -> int:
    """Return ``version`` if this code can read it, else raise a ``DatasetError`` saying why."""
    if not isinstance(version, int) or version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        raise DatasetError(
            f"{source}: schema version {version!r} is not supported by this mlm-data "
            f"(supports {supported}); re-create the dataset or upgrade mlm-data"
        )
    return version
