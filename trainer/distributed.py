"""Process-group setup for ``torchrun`` and the few collectives the trainer needs.

One process per device, as torchrun starts them: it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them the run is a single process
and every helper here is a no-op, so the training loop has no ``if distributed`` branches of
its own. The backend is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mlm_data.errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and prints; the others only train."""
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for, but torch sees no CUDA device")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) here")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                device_id=dev if use_cuda else None)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place and return it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every rank's ``arrays`` concatenated in rank order (evaluations that need all the
    predictions at once, such as entity F1 over whole sentences)."""
    if not dist.is_initialized():
        return arrays
    everyone: list[dict[str, np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, arrays)
    return {k: np.concatenate([theirs[k] for theirs in everyone if theirs is not None]) for k in arrays}
