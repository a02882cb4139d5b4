"""How a training step does its arithmetic: fp32, bf16 autocast, or bf16 weights with fp32 masters.

``train.precision`` chooses:

* ``fp32``: everything in fp32 (the CPU default; exact resume is checked in it);
* ``bf16``: fp32 weights under ``torch.autocast``: every forward casts each weight matrix to
  bf16 again, and the weight gradients come back as fp32;
* ``bf16-master``: the network the step runs holds bf16 weights, so nothing is cast in the
  forward and the gradients are bf16; the optimizer updates fp32 master copies (a bf16 weight
  cannot absorb an update a thousand times smaller than itself), which are copied back after
  each step. Two multi-tensor copies per step replace a cast per weight per forward and
  backward, which on a GPU whose host is the bottleneck means fewer kernel launches;
* ``auto``: ``bf16`` on a CUDA device that supports it, ``fp32`` elsewhere.

Either way the fp32 network (``Precision.master``) is the one the optimizer, the checkpoints,
the exports and the returned model see; ``Precision.compute`` is the one forward and backward
run on (the same module unless bf16-master).
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


def amp_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means no autocast."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


class Precision:
    """The fp32 network and the one a step computes with, and the copies between them."""

    def __init__(self, master: nn.Module, precision: str, device: torch.device) -> None:
        """``master`` is the fp32 network on ``device``, already holding its final (for instance
        resumed) weights: a bf16 copy is made from it here."""
        self.master = master
        self.name = precision if precision != "auto" else ("bf16" if amp_dtype_for("auto", device) else "fp32")
        self.amp_dtype = amp_dtype_for(precision, device)
        self.device = device
        self.compute = master
        self._pairs: list[tuple[nn.Parameter, nn.Parameter]] = []
        if precision == "bf16-master":
            self.compute = _bf16_copy(master)
            self._pairs = [(m, c) for m, c in zip(master.parameters(), self.compute.parameters())]

    def autocast(self) -> AbstractContextManager:
        """The context forward passes run in."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grads_to_master(self) -> None:
        """After backward: the bf16 gradients, as fp32, become the masters' (clipping and the
        optimizer read them there), and the compute network's are dropped."""
        if not self._pairs:
            return
        masters, grads = [], []
        for m, c in self._pairs:
            if c.grad is None:
                m.grad = None
                continue
            if m.grad is None:
                m.grad = torch.empty_like(m)
            masters.append(m.grad)
            grads.append(c.grad)
            c.grad = None
        if masters:
            torch._foreach_copy_(masters, grads)

    @torch.no_grad()
    def master_to_compute(self) -> None:
        """After the optimizer step: the compute network takes the updated weights, rounded to bf16."""
        if self._pairs:
            torch._foreach_copy_([c for _, c in self._pairs], [m for m, _ in self._pairs])


def _bf16_copy(master: nn.Module) -> nn.Module:
    """A bf16 copy of ``master`` with its parameters in the same order and tied as they are
    (``deepcopy`` keeps tied weights tied), buffers included."""
    compute = copy.deepcopy(master).to(torch.bfloat16)
    names = [n for n, _ in master.named_parameters()]
    if names != [n for n, _ in compute.named_parameters()]:
        raise RuntimeError("internal error: the bf16 copy's parameters differ from the master's")
    return compute
