"""A compact GPT-style decoder for ``causal_lm`` datasets, built from the encoder's parts.

Token and learned position embeddings, ``Block(is_causal=True)`` layers (pre-LN with the
shipped ``configs/train/gpt-tiny.yaml``), a final LayerNorm and an LM head that shares its
weight with the token embedding, as GPT-2 does. The loss is next-token cross-entropy: the
vector at position ``t`` predicts the label at ``t + 1``, over every non-padding target.

Rows are packed ``doc EOS doc EOS ...`` blocks. With ``model.document_attention`` each token
attends only to earlier tokens of its own document (a block-diagonal causal mask built from the
batch's ``document_ids``), and positions restart at 0 at every document start. The two go
together: a token that cannot see the documents before it gains nothing from knowing how far
into the row its document began, and with restarted positions a document is computed the same
wherever packing put it, and the same as a prompt given alone to ``generate``. (A row that
begins mid-document starts that document's positions at 0 too: the offset is not stored.)
Every next-token target is kept, including a document's first token predicted from the EOS
that ends the one before: that is how the model learns how documents begin.

Without document attention no mask is passed at all: padding is only ever at a row's end, where
causality already hides it from every real token, and SDPA can take its fused causal path.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from mlm_data.dataset.schema import IGNORE_INDEX
from trainer.config import ModelConfig
from trainer.models.encoder import (
    Block,
    Prediction,
    init_weights,
    masked_cross_entropy,
    num_parameters,
)


def positions_within_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` position of each token inside its document (0 at every document start).

    >>> positions_within_documents(torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1]])).tolist()
    [[0, 1, 2, 0, 1, 0, 0, 1]]
    """
    T = document_ids.size(1)
    index = torch.arange(T, device=document_ids.device).expand_as(document_ids)  # (B, T)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, T)
    return index - first


class Decoder(nn.Module):
    """Embeddings and causal blocks: token ids in, one vector per position out."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is null: set it, or fill it with config.resolve_for_dataset")
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, is_causal=True) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.layer_norm == "pre" else None
        self.document_attention = cfg.document_attention

    def forward(self, input_ids: torch.Tensor, document_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.size(1)
        mask = None
        if self.document_attention and document_ids is not None:
            pos = positions_within_documents(document_ids)  # (B, T)
            mask = (document_ids[:, :, None] == document_ids[:, None, :])[:, None]  # (B, 1, T, T), causal added inside
        else:
            pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.dropout(self.word(input_ids) + self.position(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask)  # (B, T, C)
        return x if self.ln_f is None else self.ln_f(x)


class GPT(nn.Module):
    """The decoder and its tied LM head."""

    body = "decoder"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.decoder = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)  # type: ignore[arg-type]
        self.lm_head.weight = self.decoder.word.weight
        self.apply(partial(init_weights, std=cfg.initializer_range))

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        if not non_embedding:
            return num_parameters(self)
        return num_parameters(self) - self.decoder.word.weight.numel() - self.decoder.position.weight.numel()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, document_ids: torch.Tensor | None = None) -> Prediction:
        """``attention_mask`` is accepted for a uniform batch interface and not needed (see the
        module docstring); ``labels`` are the row's own ids with -100 on padding."""
        h = self.decoder(input_ids, document_ids)  # (B, T, C)
        if labels is None:
            return Prediction(None, self.lm_head(h), None)  # (B, T, V)
        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        selected = targets != IGNORE_INDEX
        logits = self.lm_head(h[:, :-1][selected])  # (N, V)
        return Prediction(masked_cross_entropy(logits, targets[selected], selected.sum()), logits, targets[selected])

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, *, greedy: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue the ``(1, T)`` prompt ``ids`` by up to ``max_new_tokens`` tokens; stop
        before an ``eos_id``. Greedy takes the most likely token; otherwise logits are divided
        by ``temperature``, cut to the ``top_k`` most likely and sampled with ``generator``, so
        a seeded generator gives the same text every time. The context is the last
        ``max_position_embeddings`` tokens (there is no KV cache: the models here are small).
        Returns the new ids, ``(n,)``, without the EOS."""
        if ids.size(0) != 1 or ids.size(1) == 0:
            raise ValueError("generate continues one non-empty prompt: ids must be (1, T) with T >= 1")
        was_training = self.training
        self.eval()
        new = []
        window = self.config.max_position_embeddings
        try:
            for _ in range(max_new_tokens):
                h = self.decoder(ids[:, -window:])[:, -1]  # (1, C)
                logits = self.lm_head(h).float()  # (1, V)
                if greedy:
                    nxt = logits.argmax(-1, keepdim=True)  # (1, 1)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.size(-1):
                        kth = torch.topk(logits, top_k).values[:, -1:]  # (1, 1)
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)  # (1, 1)
                if eos_id is not None and int(nxt) == eos_id:
                    break
                new.append(int(nxt))
                ids = torch.cat([ids, nxt], dim=1)
        finally:
            self.train(was_training)
        return torch.tensor(new, dtype=torch.long)
