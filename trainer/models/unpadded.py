"""Unpadded ("packed") encoding: the batch's real tokens one after another, no padding.

A padded batch spends every layer's matrix multiplies on its padding too: 8-12 % of the
tokens of a typical NSP dataset. With ``train.unpad`` (MosaicBERT's unpadding) the host
removes them before the batch reaches the device (``trainer.step_inputs``): the encoder sees
``(N, C)`` for the ``N`` real tokens of all rows, and attention keeps each row to itself
through variable-length attention, described by the rows' offsets into those ``N`` tokens.

Attention uses PyTorch's nested jagged tensors: ``scaled_dot_product_attention`` on a
``(B, nh, j, hs)`` jagged view of the packed ``(N, nh, hs)`` queries, keys and values, which
picks a fused variable-length kernel (flash or memory-efficient attention) on a GPU and an exact
math fallback on the CPU. The sequence length bounds are passed in from the host so that
building the view never asks the device for them.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

# The CPU's math fallback builds a strided nested tensor internally, and torch warns once per
# process that that (other) nested layout is a prototype; the jagged layout used here is not.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage", category=UserWarning)


class Packing(NamedTuple):
    """Where each row's tokens lie among the ``N`` packed ones."""

    offsets: torch.Tensor
    """``(B + 1,)`` int64: row ``b`` is tokens ``offsets[b]:offsets[b + 1]``."""
    positions: torch.Tensor
    """``(N,)`` each token's position within its row (for the position embeddings)."""
    max_len: int
    """The longest row, in tokens."""
    min_len: int
    """The shortest row, in tokens (at least 1)."""


def varlen_attention(qkv: torch.Tensor, packing: Packing, *, num_heads: int, dropout_p: float) -> torch.Tensor:
    """Self-attention within each row of packed tokens: ``(N, 3C)`` fused q, k, v in, ``(N, C)`` out."""
    N, C3 = qkv.shape
    C = C3 // 3
    # Jagged views need contiguous values: one copy splits the fused projection into q, k, v.
    q, k, v = qkv.view(N, 3, num_heads, C // num_heads).transpose(0, 1).contiguous().unbind(0)  # 3 x (N, nh, hs)
    q, k, v = (_jagged(t, packing) for t in (q, k, v))  # 3 x (B, nh, j, hs)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, nh, j, hs)
    return y.transpose(1, 2).values().reshape(N, C)  # (N, C)


def _jagged(values: torch.Tensor, packing: Packing) -> torch.Tensor:
    nested = torch.nested.nested_tensor_from_jagged(values, packing.offsets, min_seqlen=packing.min_len,
                                                    max_seqlen=packing.max_len)  # (B, j, nh, hs)
    return nested.transpose(1, 2)
