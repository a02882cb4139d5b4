"""Where every sample comes from: a pure function of ``(seed, epoch, position)``.

An epoch of one split is a sequence of ``N`` positions (``N`` = rows in the split). The row at
position ``p`` is found in three keyed steps, each computed from the manifest's row counts:

1. the epoch's **shard order**, a permutation of the shards keyed by ``(seed, epoch)``;
2. **windows**: consecutive groups of ``window_shards`` shards in that order; window ``g`` owns
   the positions ``[start_g, start_g + rows_g)``;
3. inside a window, a **keyed permutation of its rows**: a shuffle buffer made deterministic and
   random-access (optionally sorted into length buckets instead, see ``RowOrder``).

Because no step depends on positions before ``p``, any worker can compute any batch on its
own, and a resumed run, a different worker count or a different machine sees the same rows in
the same places. Step ``s`` of rank ``r`` takes positions ``[s*B*W + r*B, +B)``
(``rank_positions``); positions ``>= N`` in the last step wrap around to ``p - N`` and are
marked as padding by the caller. ``batch_cursor`` turns a batch count into ``(epoch, position)``.

Example: 10 rows, 4 shards of sizes (3, 2, 4, 1), ``window_shards=2``; if epoch 5's shard order
is (2, 0, 3, 1), window 0 = shards 2 and 0 (positions 0..6, their 7 rows permuted by the key
``(seed, "window", dataset, 5, 0)``) and window 1 = shards 3 and 1 (positions 7..9).

Several datasets are mixed by ``Mixture``: stream position ``q`` lies in block ``q // M``
whose ``M`` slots hold ``round(w_d * M)`` slots of dataset ``d`` in a keyed order; each
dataset counts its own slots and walks through its own epochs with its own ``RowOrder``.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from mlm_data.errors import ConfigError
from mlm_data.ragged import offsets_from_lengths, ranges_index
from mlm_data.seeding import derive_key, random_bits

#: Row lengths of the given shards, concatenated in the given order (for length bucketing).
LengthsFn = Callable[[Sequence[int]], np.ndarray]


def _keyed_perm(seed: int, purpose: str, *ids: int | str, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` that is a pure function of its key."""
    bits = random_bits(derive_key(seed, purpose, *ids), np.arange(n, dtype=np.uint64))
    return np.argsort(bits, kind="stable")


class RowOrder:
    """Epoch orders over the rows of a list of shards (row ids ``0..N-1`` in shard order).

    ``namespace`` keeps the orders of different datasets in a mixture independent. With
    ``lengths`` and ``group_size`` set, each window is sorted by row length (random tie-break)
    and cut into groups aligned to multiples of ``group_size`` positions (one global step), the
    groups placed in a keyed order: every step then holds rows of similar length, and the
    arrangement is still a pure function of ``(seed, epoch, position)`` and the shards.
    """

    def __init__(self, shard_rows: Sequence[int], *, seed: int, namespace: int | str, shuffle: bool,
                 window_shards: int, lengths: LengthsFn | None = None, group_size: int | None = None,
                 cached_epochs: int = 2) -> None:
        self.shard_rows = np.asarray(shard_rows, dtype=np.int64)
        self.shard_offsets = offsets_from_lengths(self.shard_rows)
        self.num_rows = int(self.shard_offsets[-1])
        self.seed, self.namespace, self.shuffle = seed, namespace, shuffle
        self.window_shards = max(1, int(window_shards))
        self.lengths, self.group_size = lengths, group_size
        self._epochs: OrderedDict[int, EpochOrder] = OrderedDict()
        self._cached_epochs = cached_epochs

    def epoch(self, epoch: int) -> EpochOrder:
        order = self._epochs.get(epoch)
        if order is None:
            order = EpochOrder(self, epoch)
            self._epochs[epoch] = order
            while len(self._epochs) > self._cached_epochs:
                self._epochs.popitem(last=False)
        else:
            self._epochs.move_to_end(epoch)
        return order

    def shards_after(self, epoch: int, window: int, n: int) -> list[int]:
        """The next ``n`` shards the plan reads after ``window`` of ``epoch`` (for prefetching)."""
        out: list[int] = []
        e, g = epoch, window + 1
        for _ in range(len(self.shard_rows) + 1):
            order = self.epoch(e)
            if g >= order.num_windows:
                e, g = e + 1, 0
                continue
            out.extend(order.window_shards(g).tolist())
            if len(out) >= n:
                break
            g += 1
        return out[:n]


class EpochOrder:
    """One epoch of a ``RowOrder``: shard order, window bounds, and windows made on demand."""

    def __init__(self, plan: RowOrder, epoch: int, *, cached_windows: int = 3) -> None:
        self.plan, self.epoch = plan, epoch
        n_shards = len(plan.shard_rows)
        if plan.shuffle:
            self.shard_order = _keyed_perm(plan.seed, "shard-order", plan.namespace, epoch, n=n_shards)
        else:
            self.shard_order = np.arange(n_shards)
        w = plan.window_shards
        cum = offsets_from_lengths(plan.shard_rows[self.shard_order])
        self.window_bounds = np.append(cum[0:n_shards:w], cum[-1])
        self._bounds = self.window_bounds.tolist()
        self.num_windows = len(self.window_bounds) - 1
        self._windows: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_windows = cached_windows

    def window_shards(self, g: int) -> np.ndarray:
        w = self.plan.window_shards
        return self.shard_order[g * w:(g + 1) * w]

    def window_of(self, positions: np.ndarray) -> np.ndarray:
        """Window index of each position (positions must lie in ``[0, N)``)."""
        return np.searchsorted(self.window_bounds, positions, side="right") - 1

    def windows_between(self, start: int, stop: int) -> range:
        """Windows holding positions ``[start, stop)`` (``0 <= start < stop <= N``)."""
        first = bisect.bisect_right(self._bounds, start) - 1
        return range(first, bisect.bisect_right(self._bounds, stop - 1))

    def rows_between(self, start: int, stop: int) -> np.ndarray:
        """Row ids at positions ``[start, stop)``: slices of the cached windows, no index math."""
        pieces = []
        for g in self.windows_between(start, stop):
            lo = self._bounds[g]
            pieces.append(self.window(g)[max(start, lo) - lo:min(stop, self._bounds[g + 1]) - lo])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def rows(self, positions: np.ndarray, windows: np.ndarray | None = None) -> np.ndarray:
        """Row ids (``int64``) at ``positions`` of this epoch, each in ``[0, N)``.

        ``windows`` may pass ``window_of(positions)`` when the caller has it already.
        """
        positions = np.asarray(positions, dtype=np.int64)
        g = self.window_of(positions) if windows is None else windows
        if g.size and g.min() == g.max():  # the common case: one window
            gi = int(g[0])
            return self.window(gi)[positions - self.window_bounds[gi]]
        out = np.empty(positions.shape, dtype=np.int64)
        for gi in np.unique(g).tolist():
            sel = g == gi
            out[sel] = self.window(gi)[positions[sel] - self.window_bounds[gi]]
        return out

    def window(self, g: int) -> np.ndarray:
        """Row ids of window ``g`` in position order (computed once, kept for a few windows)."""
        arranged = self._windows.get(g)
        if arranged is not None:
            self._windows.move_to_end(g)
            return arranged
        arranged = self._arrange(g)
        self._windows[g] = arranged
        while len(self._windows) > self._cached_windows:
            self._windows.popitem(last=False)
        return arranged

    def _arrange(self, g: int) -> np.ndarray:
        p = self.plan
        shards = self.window_shards(g)
        base = ranges_index(p.shard_offsets[shards], p.shard_rows[shards])
        n = len(base)
        if p.lengths is not None and p.group_size:
            return base[self._bucketed(g, shards, n)]
        if p.shuffle:
            return base[_keyed_perm(p.seed, "window", p.namespace, self.epoch, g, n=n)]
        return base

    def _bucketed(self, g: int, shards: np.ndarray, n: int) -> np.ndarray:
        """Indices into the window's rows: sorted by length, dealt out to step-aligned groups."""
        p = self.plan
        assert p.lengths is not None and p.group_size
        lengths = np.asarray(p.lengths(shards.tolist()), dtype=np.int64)
        if len(lengths) != n:
            raise ValueError(f"lengths: expected {n} rows for window {g}, got {len(lengths)}")
        if p.shuffle:
            tie = random_bits(derive_key(p.seed, "bucket-tie", p.namespace, self.epoch, g),
                              np.arange(n, dtype=np.uint64))
        else:
            tie = np.arange(n, dtype=np.uint64)
        by_length = np.lexsort((tie, lengths))
        start, size = int(self.window_bounds[g]), p.group_size
        first_cut = -(-start // size) * size
        edges = np.unique(np.concatenate([[start], np.arange(first_cut, start + n, size), [start + n]])) - start
        sizes = np.diff(edges)
        if p.shuffle:
            group_order = _keyed_perm(p.seed, "bucket-order", p.namespace, self.epoch, g, n=len(sizes))
        else:
            group_order = np.arange(len(sizes))
        take_from = np.empty(len(sizes), dtype=np.int64)
        take_from[group_order] = offsets_from_lengths(sizes[group_order])[:-1]
        return by_length[ranges_index(take_from, sizes)]


class Mixture:
    """Deterministic weighted interleaving of several datasets' streams.

    Stream position ``q`` is slot ``q % M`` of block ``q // M``. Every block holds exactly
    ``counts[d]`` slots of dataset ``d`` (weights rounded by largest remainder), in a keyed
    order (``shuffle``) or evenly spread (not shuffled). Dataset ``d``'s own counter at ``q``
    is ``block * counts[d]`` plus the number of its slots earlier in the block, so the source
    and the sample of every position are pure functions of ``(seed, q)``.

    >>> Mixture([0.7, 0.3], seed=0, block_size=10, shuffle=False).counts.tolist()
    [7, 3]
    """

    def __init__(self, weights: Sequence[float], *, seed: int, block_size: int, shuffle: bool) -> None:
        w = np.asarray(weights, dtype=np.float64)
        quota = w / w.sum() * block_size
        counts = np.floor(quota).astype(np.int64)
        short = block_size - int(counts.sum())
        if short:
            counts[np.argsort(-(quota - counts), kind="stable")[:short]] += 1
        if (counts == 0).any():
            names = ", ".join(f"source {i} (weight {weights[i]})" for i in np.nonzero(counts == 0)[0])
            raise ConfigError(f"mix_block_size: a block of {block_size} samples gives no slot to {names}; "
                              "raise mix_block_size or the weight")
        self.counts, self.block_size, self.seed, self.shuffle = counts, block_size, seed, shuffle
        self._starts = offsets_from_lengths(counts)[:-1]
        self._blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._blocks.get(b)
        if cached is not None:
            return cached
        source = np.repeat(np.arange(len(self.counts)), self.counts)
        if self.shuffle:
            order = _keyed_perm(self.seed, "mix", b, n=self.block_size)
        else:
            rank = np.arange(self.block_size) - self._starts[source]
            order = np.lexsort((source, (rank + 0.5) / self.counts[source]))
        source = source[order]
        # Each dataset reads its slots in stream order: rank = its slots earlier in the block.
        by_source = np.argsort(source, kind="stable")
        rank = np.empty(self.block_size, dtype=np.int64)
        rank[by_source] = np.arange(self.block_size) - self._starts[source[by_source]]
        out = (source, rank)
        self._blocks[b] = out
        while len(self._blocks) > 4:
            self._blocks.popitem(last=False)
        return out

    def assign(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset index, that dataset's sample counter)`` for every stream position."""
        q = np.asarray(q, dtype=np.int64)
        block, slot = np.divmod(q, self.block_size)
        source = np.empty(q.shape, dtype=np.int64)
        counter = np.empty(q.shape, dtype=np.int64)
        for b in np.unique(block).tolist():
            sel = block == b
            src, rank = self._block(b)
            source[sel] = src[slot[sel]]
            counter[sel] = b * self.counts[source[sel]] + rank[slot[sel]]
        return source, counter


def batch_cursor(start: tuple[int, int], k: int, *, rows: int, global_batch: int, wrap: bool) -> tuple[int, int]:
    """``(epoch, position)`` of the ``k``-th global batch after ``start``.

    With ``wrap`` (exact epochs) every epoch starts at position 0 and its last batch pads past
    ``rows``; the epoch being resumed keeps its own start, so a resume with another batch
    geometry still visits the rest of that epoch exactly once. Without ``wrap`` (a mixture)
    positions run on as one stream and epochs are only a way of counting.

    >>> batch_cursor((0, 0), 3, rows=10, global_batch=4, wrap=True)
    (1, 0)
    >>> batch_cursor((0, 0), 3, rows=10, global_batch=4, wrap=False)
    (1, 2)
    """
    epoch, position = start
    if not wrap:
        return divmod(epoch * rows + position + k * global_batch, rows)
    left = -(-(rows - position) // global_batch)
    if k < left:
        return epoch, position + k * global_batch
    k -= left
    steps = -(-rows // global_batch)
    return epoch + 1 + k // steps, (k % steps) * global_batch


def rank_positions(position: int, *, rank: int, batch_size: int) -> np.ndarray:
    """The positions one rank reads in the global batch that starts at ``position``."""
    return position + rank * batch_size + np.arange(batch_size, dtype=np.int64)
