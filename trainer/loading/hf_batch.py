"""A loader batch as a Hugging Face ``transformers`` model takes it: one call, ``hf_inputs``.

Batches name their tensors as transformers does (``input_ids``, ``attention_mask``,
``token_type_ids``, ``labels``, ``next_sentence_label``) and carry more: ``sample_mask`` and
``row_id`` on every batch, ``word_start``/``example_id``/``window_index`` for token
classification, ``document_ids`` for causal LMs. transformers 4.x models refuse any keyword
their ``forward`` does not name (``TypeError: ... unexpected keyword argument 'sample_mask'``),
so a batch cannot be splatted into one as it is; ``hf_inputs`` keeps what the model takes::

    out = BertForPreTraining(config)(**hf_inputs(batch))
    out = BertForMaskedLM(config)(**hf_inputs(batch, model))   # drops next_sentence_label too
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

#: What transformers' BERT classes take (``BertForPreTraining`` takes all five).
HF_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label")

T = TypeVar("T")


def hf_inputs(batch: Mapping[str, T], model: Any = None) -> dict[str, T]:
    """The tensors of ``batch`` a transformers model accepts as keyword arguments.

    Without ``model``: the ``HF_KEYS`` the batch has. With one: those its ``forward`` names, so
    ``next_sentence_label`` stays out of a ``BertForMaskedLM`` and ``token_type_ids`` out of a
    model without segments. Nothing is copied or moved; the values are the batch's own.
    """
    keys: tuple[str, ...] = HF_KEYS
    if model is not None:
        params = inspect.signature(model.forward).parameters
        keys = tuple(k for k in HF_KEYS if k in params)
    return {k: batch[k] for k in keys if k in batch}
