"""Building any rank's batch in any process: the part of the loader that runs in workers.

A ``Producer`` holds what one process needs to turn ``(epoch, position)`` into a collated
batch: the sample plan (``trainer.loading.sample_order``), a shard cache (``trainer.loading.shard_cache``) and the
collator (``trainer.loading.collate``). It is built from a ``LoaderSpec``, which is plain picklable data
(manifests and settings, no open files, no threads), inside each DataLoader worker, or once in
the main process when there are no workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mlm_data.dataset.compatibility import Made
from mlm_data.dataset.manifest import Manifest, ShardEntry
from trainer.loading.collate import Collator, Part, columns_for
from trainer.loading.heap import keep_freed_memory
from trainer.loading.options import LoaderOptions
from trainer.loading.sample_order import Mixture, RowOrder, batch_cursor, rank_positions
from trainer.loading.shard_cache import ShardCache
from trainer.loading.shard_reader import ShardRows


@dataclass(frozen=True)
class SourceSpec:
    """A source with its manifest read and its split's shards listed (picklable for workers)."""

    path: str
    weight: float
    manifest: Manifest
    shards: tuple[ShardEntry, ...]
    fingerprint: str

    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    @property
    def made(self) -> Made:
        return Made.of(self.manifest)


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a worker process needs to build any batch: no open files, no threads.

    ``options`` are resolved: ``cache_dir`` and ``fuse_batches`` are set, never null.
    """

    sources: tuple[SourceSpec, ...]
    seed: int
    batch_size: int
    rank: int
    world_size: int
    shuffle: bool
    max_seq_length: int
    options: LoaderOptions

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def fuse(self) -> int:
        return self.options.fused_batches(self.batch_size, self.max_seq_length)


def fingerprint(manifest: Manifest, split: str, shards: Sequence[ShardEntry]) -> str:
    """What must not change under a resumed run: task, tokenizer and every shard's content."""
    body = json.dumps([manifest.task, split, manifest.tokenizer.get("sha256"),
                       [[s.path, s.num_rows, s.sha256] for s in shards]])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class Producer:
    """Builds any global batch's share for one rank; one per process (main or worker).

    ``concatenated`` reads all sources as one split with exact epochs (evaluation of a
    mixture); otherwise several sources are mixed by weight as an endless stream.
    """

    def __init__(self, spec: LoaderSpec, *, concatenated: bool) -> None:
        keep_freed_memory()  # batch passes recycle the same large blocks (trainer.loading.heap)
        self.spec = spec
        options = spec.options
        self.entries: list[tuple[str, ShardEntry]] = [
            (src.manifest.url(e.path), e) for src in spec.sources for e in src.shards]
        rows = np.array([e.num_rows for _, e in self.entries], dtype=np.int64)
        self.row_offsets = np.concatenate([[0], np.cumsum(rows)])
        per_source = np.array([len(src.shards) for src in spec.sources])
        self.shard_offsets = np.concatenate([[0], np.cumsum(per_source)])
        self.exact = concatenated or len(spec.sources) == 1
        first = spec.sources[0].manifest
        lists, scalars = columns_for(first.task, static_masking=first.static_masking, masking=options.masking)
        window = options.shuffle_window_shards
        assert options.cache_dir is not None, "LoaderSpec.options must be resolved"
        self.cache = ShardCache(options.cache_dir, max_bytes=options.max_cache_bytes,
                                keep_open=2 * window * len(spec.sources),
                                prefetch_threads=max(2, min(window, 8)), list_columns=lists, scalar_columns=scalars)
        self.collator = Collator(
            task=first.task, special_tokens=first.special_tokens, vocab_size=first.vocab_size,
            max_seq_length=spec.max_seq_length, static_masking=first.static_masking, masking=options.masking,
            seed=spec.seed, pad_to_multiple_of=options.pad_to_multiple_of, pad_to_max_length=options.pad_to_max_length,
            tokenizer_sha256=str(first.tokenizer.get("sha256", "")))
        group = spec.global_batch if options.length_bucketing else None
        if self.exact:
            ns: int | str = 0 if len(spec.sources) == 1 else "all"
            self.orders = [RowOrder(rows, seed=spec.seed, namespace=ns, shuffle=spec.shuffle,
                                    window_shards=window, lengths=self._lengths_fn(0) if group else None,
                                    group_size=group)]
            self.source_rows = [int(rows.sum())]
        else:
            self.orders = [RowOrder(rows[self.shard_offsets[d]:self.shard_offsets[d + 1]], seed=spec.seed,
                                    namespace=d, shuffle=spec.shuffle, window_shards=window)
                           for d in range(len(spec.sources))]
            self.source_rows = [o.num_rows for o in self.orders]
            self.mixture = Mixture([s.weight for s in spec.sources], seed=spec.seed,
                                   block_size=options.mix_block_size, shuffle=spec.shuffle)
        self.num_rows = int(rows.sum())
        self._hinted: set[tuple[int, int, int]] = set()

    def _lengths_fn(self, first_shard: int) -> Callable[[Sequence[int]], np.ndarray]:
        def lengths(shards: Sequence[int]) -> np.ndarray:
            flat = [first_shard + s for s in shards]
            self.cache.prefetch(self.entries[f] for f in flat)
            return np.concatenate([self._open(f).lengths for f in flat] or [np.zeros(0, np.int64)])
        return lengths

    def _open(self, flat_shard: int) -> ShardRows:
        url, entry = self.entries[flat_shard]
        return self.cache.open(url, entry)

    def _hint(self, d: int, epoch: int, windows: Sequence[int]) -> None:
        """On first touching a window: fetch its shards in parallel and prefetch what follows."""
        order = self.orders[d]
        first = int(self.shard_offsets[d]) if not self.exact else 0
        for g in windows:
            if (d, epoch, g) in self._hinted:
                continue
            if len(self._hinted) > 4096:
                self._hinted.clear()
            self._hinted.add((d, epoch, g))
            shards = order.epoch(epoch).window_shards(g).tolist()
            shards += order.shards_after(epoch, g, self.spec.options.prefetch_shards)
            self.cache.prefetch(self.entries[first + s] for s in shards)

    def batches(self, cursors: Sequence[tuple[int, int]]) -> list[dict[str, np.ndarray]]:
        """This rank's share of the global batches at ``(epoch, position)`` ..., collated together."""
        picked = [self._rows(epoch, position) for epoch, position in cursors]
        row_ids = np.concatenate([r for r, _, _ in picked])
        mask_epochs = np.concatenate([e for _, e, _ in picked])
        real = np.concatenate([m for _, _, m in picked])
        shard = np.searchsorted(self.row_offsets, row_ids, side="right") - 1
        local = row_ids - self.row_offsets[shard]
        by_shard = np.argsort(shard, kind="stable")
        cuts = [0, *(np.flatnonzero(np.diff(shard[by_shard])) + 1).tolist(), len(by_shard)]
        self.cache.keep_open = max(self.cache.keep_open, len(cuts) - 1)  # all of them stay open
        parts = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            at = by_shard[a:b]
            parts.append(Part(self._open(int(shard[at[0]])), at, local[at]))
        return self.collator(parts, row_ids=row_ids, mask_epochs=mask_epochs, sample_mask=real,
                             batch_size=self.spec.batch_size)

    def batch(self, epoch: int, position: int) -> dict[str, np.ndarray]:
        """This rank's rows of the global batch at ``(epoch, position)``, collated."""
        return self.batches([(epoch, position)])[0]

    def _rows(self, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row ids, mask epochs and real-sample flags of this rank's share of one global batch."""
        spec = self.spec
        if self.exact:
            # This rank's positions are one contiguous run, wrapping past N (padding) if needed.
            start, n = position + spec.rank * spec.batch_size, self.num_rows
            order = self.orders[0].epoch(epoch)
            pieces, at, left = [], start, spec.batch_size
            while left:
                lo = at % n
                hi = min(n, lo + left)
                windows = order.windows_between(lo, hi)
                self._hint(0, epoch, windows)
                pieces.append(order.rows_between(lo, hi))
                at, left = at + hi - lo, left - (hi - lo)
            row_ids = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            real = np.arange(spec.batch_size) < n - start
            mask_epochs = np.full(spec.batch_size, epoch, dtype=np.int64)
        else:
            positions = rank_positions(position, rank=spec.rank, batch_size=spec.batch_size)
            real = np.ones(len(positions), dtype=bool)
            source, counter = self.mixture.assign(epoch * self.num_rows + positions)
            row_ids = np.empty(len(positions), dtype=np.int64)
            mask_epochs = np.empty(len(positions), dtype=np.int64)
            for d in np.unique(source).tolist():
                sel = np.nonzero(source == d)[0]
                ep, pos = np.divmod(counter[sel], self.source_rows[d])
                for e in np.unique(ep).tolist():
                    at, pos_e = sel[ep == e], pos[ep == e]
                    order = self.orders[d].epoch(e)
                    windows = order.window_of(pos_e)
                    self._hint(d, e, np.unique(windows).tolist())
                    row_ids[at] = order.rows(pos_e, windows) + self.row_offsets[self.shard_offsets[d]]
                    mask_epochs[at] = e
        return row_ids, mask_epochs, real

    def close(self) -> None:
        self.cache.close()


def to_torch(batch: Mapping[str, np.ndarray | torch.Tensor], *, pin: bool = False) -> dict[str, torch.Tensor]:
    """Tensors sharing the arrays' memory (``from_numpy`` copies nothing)."""
    out = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(v) for k, v in batch.items()}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


def as_is(batch: Any) -> Any:
    """DataLoader's collate_fn: workers send numpy arrays, pickled whole through the pipe,
    which is several times cheaper than one shared-memory segment per small tensor."""
    return batch


def produce(producer: Producer, start: tuple[int, int], *, first: int, every: int, limit: int | None,
            wrap: bool, fuse: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Batches ``first, first + every, ...`` after ``start`` (below ``limit``), tagged with ``k``
    so the receiving side can check that they arrive in order; ``fuse`` of them are built in
    one pass."""
    spec = producer.spec
    k = first
    while limit is None or k < limit:
        ks = [k + i * every for i in range(fuse) if limit is None or k + i * every < limit]
        cursors = [batch_cursor(start, j, rows=producer.num_rows, global_batch=spec.global_batch, wrap=wrap)
                   for j in ks]
        yield from zip(ks, producer.batches(cursors))
        k += len(ks) * every


class BatchStream(IterableDataset):
    """What each DataLoader worker runs: batches ``k ≡ worker (mod workers)`` from ``start``."""

    def __init__(self, spec: LoaderSpec, start: tuple[int, int], *, concatenated: bool, limit: int | None,
                 wrap: bool) -> None:
        self.spec, self.start, self.concatenated, self.limit, self.wrap = spec, start, concatenated, limit, wrap

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        producer = Producer(self.spec, concatenated=self.concatenated)
        try:
            yield from produce(producer, self.start, first=worker, every=workers, limit=self.limit, wrap=self.wrap,
                               fuse=self.spec.fuse)
        finally:
            producer.close()
