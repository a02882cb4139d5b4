"""A compact BERT: embeddings, a stack of Transformer blocks, an MLM head and an NSP head.

Written to be read top to bottom, in the spirit of nanoGPT's ``model.py``. The names follow
the shapes: ``B`` batch, ``T`` sequence length, ``C`` hidden size, ``nh`` heads, ``hs`` head
size, ``V`` vocabulary, ``N`` number of predicted (masked) positions in the batch.

Two choices matter for speed and are easy to miss:

* the MLM head runs only on the positions that carry a label (about 15% of tokens), so the
  ``(C x V)`` vocabulary projection, the largest matmul in a small BERT, costs 15% of what a
  head over every token would;
* attention is ``F.scaled_dot_product_attention``, which picks a fused kernel when it can.

Two inputs serve the training step's speed options (``trainer.step_inputs``): ``mlm_positions``
and ``mlm_targets`` name the scored positions with a fixed-size, padded gather instead of a
boolean index (whose result size only the device knows, so the host would wait for it), and
``packing`` runs the encoder on the batch's real tokens alone (``trainer.models.unpadded``).

``Block`` and ``SelfAttention`` take ``is_causal``, so the decoder (``trainer.models.decoder``) is
built from the same parts; the fine-tuning heads are in ``trainer.models.classifiers``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mlm_data.dataset.schema import IGNORE_INDEX
from trainer.config import ModelConfig
from trainer.models.unpadded import Packing, varlen_attention


class ModelOutput(NamedTuple):
    loss: torch.Tensor | None
    """``mlm_loss + nsp_loss`` (whichever are computed); None without labels."""
    mlm_loss: torch.Tensor | None
    """Mean cross-entropy over the labelled positions."""
    nsp_loss: torch.Tensor | None
    """Mean cross-entropy of the next-sentence labels that are not -100."""
    logits: torch.Tensor
    """With ``labels``: ``(N, V)`` at the labelled positions, in row-major order (the order of
    ``labels[labels != -100]``); with ``mlm_positions``: ``(K, V)`` at those. Without either:
    ``(B, T, V)`` at every position."""
    mlm_labels: torch.Tensor | None
    """``(N,)`` the targets of ``logits``' rows (with ``mlm_positions``: ``mlm_targets``, -100
    on the padding rows), when labels were given."""
    nsp_logits: torch.Tensor | None
    """``(B, 2)``: is-next (0) / random-next (1) scores, when the model has an NSP head."""


class Prediction(NamedTuple):
    """What the decoder and the classifiers return: one loss, and logits row-aligned with targets."""

    loss: torch.Tensor | None
    """Mean cross-entropy over the scored targets; None without labels."""
    logits: torch.Tensor
    """With labels: ``(N, K)``, one row per scored target (row-major order of the positions or
    rows whose label is not -100). Without: every position or row."""
    labels: torch.Tensor | None
    """``(N,)`` the targets of ``logits``' rows, when labels were given."""


def init_weights(module: nn.Module, *, std: float) -> None:
    """BERT's initialisation, for ``model.apply``: normal(0, std) weights and embeddings,
    zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over ``count`` targets divided by at-least-one: a batch without
    targets (all padding rows) keeps a finite loss and a connected graph, so DDP still sees a
    gradient for every parameter. Rows whose label is -100 add nothing."""
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum") / count.clamp(min=1)


def _activation(name: str) -> nn.Module:
    return nn.GELU(approximate="tanh" if name == "gelu_tanh" else "none")


def num_parameters(model: nn.Module, embeddings: nn.Module | None = None) -> int:
    """Distinct parameters of ``model`` (tied ones count once), less the tables of ``embeddings``."""
    n = sum(p.numel() for p in model.parameters())
    if embeddings is not None:
        n -= sum(p.numel() for p in embeddings.parameters() if p.dim() == 2)
    return n


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is null: set it, or fill it with config.resolve_for_dataset")
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` ids at positions ``0..T-1``, or packed ``(N,)`` ids at their ``positions``."""
        pos = torch.arange(input_ids.size(1), device=input_ids.device) if positions is None else positions  # (T,)
        x = self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids)  # (B, T, C) or (N, C)
        return self.dropout(self.ln(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, *, is_causal: bool = False) -> None:
        super().__init__()
        self.n_head = cfg.num_heads
        self.is_causal = is_causal
        self.attention_dropout = cfg.attention_dropout
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, packing: Packing | None = None) -> torch.Tensor:
        """``attn_mask``: ``(B, 1, 1, T)`` bool, True where a key may be attended to. With
        ``packing``, ``x`` is the ``(N, C)`` packed tokens and attention stays within each row."""
        dropout_p = self.attention_dropout if self.training else 0.0
        if packing is not None:
            y = varlen_attention(self.qkv(x), packing, num_heads=self.n_head, dropout_p=dropout_p)  # (N, C)
            return self.dropout(self.proj(y))
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        is_causal = self.is_causal
        if is_causal and attn_mask is not None:
            # SDPA takes either a mask or is_causal, so fold causality into the padding mask.
            attn_mask = attn_mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (B, 1, T, T)
            is_causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = _activation(cfg.activation)
        self.proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """One Transformer layer; ``post`` normalises after each residual add as BERT did, ``pre``
    normalises each sublayer's input and leaves the residual stream untouched."""

    def __init__(self, cfg: ModelConfig, *, is_causal: bool = False) -> None:
        super().__init__()
        self.pre_ln = cfg.layer_norm == "pre"
        self.attn = SelfAttention(cfg, is_causal=is_causal)
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = FeedForward(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, packing: Packing | None = None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attn(self.ln_1(x), attn_mask, packing)  # (B, T, C) or (N, C)
            return x + self.mlp(self.ln_2(x))  # (B, T, C) or (N, C)
        x = self.ln_1(x + self.attn(x, attn_mask, packing))  # (B, T, C) or (N, C)
        return self.ln_2(x + self.mlp(x))  # (B, T, C) or (N, C)


class Encoder(nn.Module):
    """Embeddings and blocks: token ids in, contextual vectors out."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        # Pre-LN leaves the residual stream unnormalised, so it needs one LayerNorm at the end.
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.layer_norm == "pre" else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, packing: Packing | None = None) -> torch.Tensor:
        """``(B, T)`` ids in, ``(B, T, C)`` out; with ``packing``, ``(N,)`` packed ids (and token
        types) in, ``(N, C)`` out, and ``attention_mask`` is not needed."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None and packing is None:
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids, None if packing is None else packing.positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask, packing)  # (B, T, C) or (N, C)
        return x if self.ln_f is None else self.ln_f(x)


class MLMHead(nn.Module):
    """Dense + activation + LayerNorm, then a vocabulary projection that shares its weight with
    the input embeddings (as BERT does): one matrix to learn instead of two."""

    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = _activation(cfg.activation)
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, word_embeddings.num_embeddings)
        self.decoder.weight = word_embeddings.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(self.act(self.dense(h))))  # (..., V)


class BertForPreTraining(nn.Module):
    """The encoder with its pretraining heads: MLM always, NSP when ``cfg.nsp_head``."""

    body = "encoder"
    """The submodule every warm start must fill (``trainer.warm_start``); the rest are heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.mlm_head = MLMHead(cfg, self.encoder.embeddings.word)
        if cfg.nsp_head:
            self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
            self.nsp = nn.Linear(cfg.hidden_size, 2)
        else:
            self.pooler = self.nsp = None
        self.apply(partial(init_weights, std=cfg.initializer_range))

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        """Distinct parameters (the tied decoder weight counts once); ``non_embedding`` leaves
        out the three embedding tables, the usual count for FLOP estimates."""
        return num_parameters(self, self.encoder.embeddings if non_embedding else None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        mlm_targets: torch.Tensor | None = None,
        packing: Packing | None = None,
    ) -> ModelOutput:
        """``labels``: ``(B, T)``, -100 where nothing is predicted. Or, instead, ``mlm_positions``
        ``(K,)`` (flat indices into the ``B * T`` positions, or the ``N`` packed tokens) and
        ``mlm_targets`` ``(K,)``, -100 on the rows that only pad ``K``: static shapes, no sync."""
        h = self.encoder(input_ids, attention_mask, token_type_ids, packing)  # (B, T, C) or (N, C)

        nsp_logits = nsp_loss = None
        if self.nsp is not None:
            first = h[:, 0] if packing is None else h.index_select(0, packing.offsets[:-1])  # (B, C)
            pooled = torch.tanh(self.pooler(first))  # (B, C) from [CLS]
            nsp_logits = self.nsp(pooled)  # (B, 2)
            if next_sentence_label is not None:
                n_rows = (next_sentence_label != IGNORE_INDEX).sum().clamp(min=1)
                nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label,
                                           ignore_index=IGNORE_INDEX, reduction="sum") / n_rows

        if mlm_positions is not None and mlm_targets is not None:
            rows = h.reshape(-1, h.size(-1)).index_select(0, mlm_positions)  # (K, C)
            logits = self.mlm_head(rows)  # (K, V)
            mlm_loss = masked_cross_entropy(logits, mlm_targets, (mlm_targets != IGNORE_INDEX).sum())
            loss = mlm_loss if nsp_loss is None else mlm_loss + nsp_loss
            return ModelOutput(loss, mlm_loss, nsp_loss, logits, mlm_targets, nsp_logits)
        if labels is None:
            return ModelOutput(None, None, nsp_loss, self.mlm_head(h), None, nsp_logits)  # logits (B, T, V)

        selected = labels != IGNORE_INDEX  # (B, T)
        mlm_labels = labels[selected]  # (N,)
        logits = self.mlm_head(h[selected])  # (N, V)
        mlm_loss = masked_cross_entropy(logits, mlm_labels, selected.sum())
        loss = mlm_loss if nsp_loss is None else mlm_loss + nsp_loss
        return ModelOutput(loss, mlm_loss, nsp_loss, logits, mlm_labels, nsp_logits)
