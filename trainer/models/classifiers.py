"""Fine-tuning heads on the BERT encoder: one label per token, or one label per sequence.

Both follow Hugging Face's ``BertForTokenClassification`` and ``BertForSequenceClassification``
(same layers, same parameter names below the encoder), so a pretrained encoder, ours or a HF
BERT, is loaded as is and only the ``classifier`` starts from random. Like the MLM head, the
token classifier runs only on the positions that carry a label; padding rows of an epoch's
last batch carry -100 everywhere and so cost nothing and count for nothing.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from mlm_data.dataset.schema import IGNORE_INDEX
from trainer.config import ModelConfig
from trainer.models.encoder import (
    Encoder,
    Prediction,
    init_weights,
    masked_cross_entropy,
    num_parameters,
)


def _num_labels(cfg: ModelConfig) -> int:
    if cfg.num_labels is None:
        raise ValueError("model.num_labels is null: set it, or fill it with config.resolve_for_dataset")
    return cfg.num_labels


class _Classifier(nn.Module):
    """The encoder, dropout and a linear ``classifier``; subclasses add what sits between."""

    body = "encoder"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, _num_labels(cfg))

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        return num_parameters(self, self.encoder.embeddings if non_embedding else None)


class BertForTokenClassification(_Classifier):
    """Encoder, dropout, and a linear layer over every token's vector (NER, POS tagging)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.apply(partial(init_weights, std=cfg.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Prediction:
        h = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if labels is None:
            return Prediction(None, self.classifier(self.dropout(h)), None)  # logits (B, T, L)
        selected = labels != IGNORE_INDEX  # (B, T)
        targets = labels[selected]  # (N,)
        logits = self.classifier(self.dropout(h[selected]))  # (N, L)
        return Prediction(masked_cross_entropy(logits, targets, selected.sum()), logits, targets)


class BertForSequenceClassification(_Classifier):
    """Encoder, BERT's pooler ([CLS] vector → dense → tanh), dropout, and a linear layer.

    The pooler is the one an NSP-pretrained checkpoint (or a HF ``BertModel``) trained, so a
    warm start reuses it; without one it starts from random like the classifier.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.apply(partial(init_weights, std=cfg.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Prediction:
        h = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        pooled = torch.tanh(self.pooler(h[:, 0]))  # (B, C) from [CLS]
        logits = self.classifier(self.dropout(pooled))  # (B, L)
        if labels is None:
            return Prediction(None, logits, None)
        selected = labels != IGNORE_INDEX  # (B,)
        targets = labels[selected]  # (N,)
        return Prediction(masked_cross_entropy(logits[selected], targets, selected.sum()), logits[selected], targets)
