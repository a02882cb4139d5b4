"""AdamW with BERT's weight-decay exclusions, and the learning-rate schedule as a pure function.

``lr_at`` depends on nothing but the step and the config, so a checkpoint needs no scheduler
state: a resumed run recomputes the same rate for the same step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then decay to min_lr.

    Warmup climbs in equal increments and reaches ``lr`` on its last step; decay then runs from
    ``lr`` at step ``warmup_steps`` towards ``min_lr`` at ``max_steps`` (and stays there after).

    >>> cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=4, max_steps=14)
    >>> [lr_at(s, cfg) for s in (0, 1, 3, 4, 9, 14)]
    [0.25, 0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    if cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0 - progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * factor


def warmup_warning(cfg: TrainConfig) -> str | None:
    """One line when the whole run is warmup (``warmup_steps >= max_steps``): the rate then
    never decays and peaks at most on the last step, which is seldom what was meant (a short
    ``--max-steps`` under a config's long warmup).

    >>> warmup_warning(TrainConfig(warmup_steps=60, max_steps=30))[:48]
    'warning: warmup_steps (60) >= max_steps (30): th'
    """
    if cfg.warmup_steps < cfg.max_steps:
        return None
    return (f"warning: warmup_steps ({cfg.warmup_steps}) >= max_steps ({cfg.max_steps}): the whole run is warmup, "
            "so the learning rate never decays; lower --warmup-steps or raise --max-steps")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (linear weights, embedding tables) decay; vectors (biases,
    LayerNorm gains and shifts) do not, since shrinking them toward zero only fights the
    normalisation they implement. Tied parameters appear once."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, *, device: torch.device) -> torch.optim.AdamW:
    # The fused CUDA kernel is one launch for all parameters; the CPU keeps the default path.
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr_at(0, cfg),
                             betas=tuple(cfg.betas), eps=cfg.eps, fused=device.type == "cuda")
