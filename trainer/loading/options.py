"""How a ``ShardLoader`` reads: one frozen dataclass, validated once, passed whole.

``LoaderOptions`` is the single place where the loader's settings are named, documented and
checked. The training config's ``data`` section *is* these options plus the datasets to read
(``trainer.config.DataConfig`` extends this class), so a YAML key ``data.num_workers``, the
flag ``--num-workers`` and ``ShardLoader(options=LoaderOptions(num_workers=2))`` are the same
field with the same rule. What differs between two loaders of one run (which split, shuffled
or not, rank, batch size, seed) is an argument of ``ShardLoader``, not an option.

No torch here: the config imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlm_data.config.loading import check
from mlm_data.config.preprocess import MaskingConfig


@dataclass(frozen=True)
class LoaderOptions:
    num_workers: int = 0
    """Loader worker processes per rank (0 = read in the training process); changing it never changes the batches."""
    shuffle_window_shards: int = 4
    """Rows are shuffled across this many shards at a time (more = better mixing, more memory)."""
    length_bucketing: bool = False
    """Group rows of similar length into batches to save padding (one dataset only, not a mixture)."""
    pad_to_multiple_of: int = 8
    """Pad each batch's length up to a multiple of this (tensor-core friendly)."""
    pad_to_max_length: bool = False
    """Pad every batch to the datasets' max_seq_length: static shapes for torch.compile and XLA, more padding."""
    prefetch_shards: int = 2
    """Shards downloaded ahead of the current shuffle window (0 = fetch each window only when it is reached)."""
    cache_dir: str | None = None
    """Local folder for verified shards, reusable by later runs and other datasets (shards are named by
    their sha256 and re-hashed on first use in each process); null = a temporary folder removed when the loader closes."""
    max_cache_bytes: int = 4 << 30
    """Upper bound of the shard cache; least recently used shards not in use are evicted beyond it."""
    mix_block_size: int = 1000
    """Mixing several datasets: every block of this many samples holds exactly round(weight x block) of each."""
    fuse_batches: int | None = None
    """Batches a worker builds in one vectorised pass (the same batches either way); null = about 128k tokens' worth, at least 512 rows, at most 32 batches."""
    masking: MaskingConfig | None = field(default_factory=MaskingConfig)
    """Dynamic masking applied by the loader (ignored for statically masked datasets and for non-MLM tasks);
    null = rows as stored with nothing to predict (for reading rows; a training run needs it)."""

    def __post_init__(self) -> None:
        check(self.problems())

    def problems(self) -> list[str]:
        """Every rule this object breaks, one line each (``field: must ..., found ...``).

        A subclass adds its own and keeps these, so one error lists them all.
        """
        errors = []
        for name, low in (("num_workers", 0), ("shuffle_window_shards", 1), ("pad_to_multiple_of", 1),
                          ("prefetch_shards", 0), ("max_cache_bytes", 1), ("mix_block_size", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                errors.append(f"{name}: must be an integer >= {low}, found {value!r}")
        if self.fuse_batches is not None and (not _is_int(self.fuse_batches) or self.fuse_batches < 1):
            errors.append(f"fuse_batches: must be an integer >= 1 or null, found {self.fuse_batches!r}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            errors.append(f"cache_dir: must be a folder or null, found {self.cache_dir!r}")
        if self.masking is not None and not isinstance(self.masking, MaskingConfig):
            errors.append(f"masking: must be a masking section or null, found {self.masking!r}")
        return errors

    def fused_batches(self, batch_size: int, max_seq_length: int) -> int:
        """``fuse_batches``, or when null the default: about 128k tokens' worth of rows, at least
        512 rows, 1 to 32 batches. A pass costs ~0.3 ms of fixed numpy overhead whatever its
        size, which a 512-row pass of 128-token rows still feels (~15 %); past ~256k tokens the
        arrays outgrow the CPU caches and a bigger pass gains nothing (bench/loader_throughput.py).

        >>> o = LoaderOptions()
        >>> o.fused_batches(32, 128), o.fused_batches(128, 128), o.fused_batches(32, 512), o.fused_batches(1024, 512)
        (32, 8, 16, 1)
        """
        if self.fuse_batches:
            return self.fuse_batches
        rows = max(512, (128 << 10) // max(max_seq_length, 1))
        return max(1, min(32, -(-rows // batch_size)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
