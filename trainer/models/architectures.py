"""Which network a model config builds: the task decides the heads, and encoder or decoder.

=========================================  =================================================
``model.task``                             network
=========================================  =================================================
``mlm_nsp``, ``mlm_fullsent``,             ``BertForPreTraining``: encoder + MLM head
``mlm_docsent``                            (+ NSP head with ``nsp_head``)
``causal_lm``                              ``GPT``: causal decoder + tied LM head
``token_classification``                   ``BertForTokenClassification``
``sequence_classification``                ``BertForSequenceClassification``
=========================================  =================================================

Every one of them has a ``body`` attribute naming the submodule that holds the shared
Transformer (``encoder`` or ``decoder``): a warm start must fill it, the rest are heads.
"""

from __future__ import annotations

from torch import nn

from mlm_data.dataset.schema import MLM_TASKS
from trainer.config import ModelConfig
from trainer.models.classifiers import BertForSequenceClassification, BertForTokenClassification
from trainer.models.decoder import GPT
from trainer.models.encoder import BertForPreTraining


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``cfg.task`` (an MLM encoder when it is null)."""
    if cfg.task is None or cfg.task in MLM_TASKS:
        return BertForPreTraining(cfg)
    if cfg.task == "causal_lm":
        return GPT(cfg)
    if cfg.task == "token_classification":
        return BertForTokenClassification(cfg)
    if cfg.task == "sequence_classification":
        return BertForSequenceClassification(cfg)
    raise ValueError(f"no network for model.task {cfg.task!r}")
