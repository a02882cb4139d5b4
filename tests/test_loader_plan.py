"""The sample plan: pure functions of (seed, epoch, position), worked out on small cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.errors import ConfigError
from trainer.loading.sample_order import Mixture, RowOrder, batch_cursor, rank_positions

SHARDS = [5, 3, 0, 7, 2, 9]  # an empty shard included


def order(**kw) -> RowOrder:
    kw.setdefault("seed", 11)
    kw.setdefault("namespace", 0)
    kw.setdefault("shuffle", True)
    kw.setdefault("window_shards", 2)
    return RowOrder(SHARDS, **kw)


def shard_of(rows: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum([0] + SHARDS), rows, side="right") - 1


@pytest.mark.parametrize("window_shards", [1, 2, 4, 10])
def test_each_epoch_is_a_permutation_built_from_windows(window_shards):
    plan = order(window_shards=window_shards)
    for epoch in range(3):
        e = plan.epoch(epoch)
        rows = e.rows(np.arange(plan.num_rows))
        assert sorted(rows.tolist()) == list(range(plan.num_rows))
        for g in range(e.num_windows):
            lo, hi = e.window_bounds[g], e.window_bounds[g + 1]
            assert set(shard_of(rows[lo:hi]).tolist()) <= set(e.window_shards(g).tolist())


def test_any_position_is_computed_alone():
    """Random access: a position's row does not depend on which positions were asked before."""
    full = order().epoch(4).rows(np.arange(26))
    probe = np.array([25, 3, 17, 0, 9])
    assert order().epoch(4).rows(probe).tolist() == full[probe].tolist()


@pytest.mark.parametrize("window_shards", [1, 3])
def test_contiguous_runs_equal_single_positions(window_shards):
    e = order(window_shards=window_shards).epoch(2)
    full = e.rows(np.arange(26))
    for start, stop in [(0, 26), (0, 1), (4, 9), (7, 21), (25, 26)]:
        assert e.rows_between(start, stop).tolist() == full[start:stop].tolist()
        assert list(e.windows_between(start, stop)) == sorted(set(e.window_of(np.arange(start, stop)).tolist()))


def test_keyed_by_seed_epoch_and_namespace():
    rows = order().epoch(0).rows(np.arange(26))
    assert order().epoch(0).rows(np.arange(26)).tolist() == rows.tolist()
    assert order().epoch(1).rows(np.arange(26)).tolist() != rows.tolist()
    assert order(seed=12).epoch(0).rows(np.arange(26)).tolist() != rows.tolist()
    assert order(namespace=1).epoch(0).rows(np.arange(26)).tolist() != rows.tolist()


def test_unshuffled_is_manifest_order():
    assert order(shuffle=False).epoch(3).rows(np.arange(26)).tolist() == list(range(26))


def test_length_buckets_fill_step_aligned_groups():
    lengths = np.random.default_rng(0).integers(1, 100, size=26)
    plan = order(window_shards=3, group_size=4,
                 lengths=lambda shards: np.concatenate([lengths[np.cumsum([0] + SHARDS)[s]:][:SHARDS[s]] for s in shards]))
    e = plan.epoch(0)
    rows = e.rows(np.arange(26))
    assert sorted(rows.tolist()) == list(range(26))
    # Within a window, every group of 4 positions that does not cross a window edge holds
    # rows that are neighbours in that window's length order.
    for g in range(e.num_windows):
        lo, hi = int(e.window_bounds[g]), int(e.window_bounds[g + 1])
        ranked = np.sort(lengths[rows[lo:hi]])
        for start in range(-(-lo // 4) * 4, hi - 3, 4):
            group = np.sort(lengths[rows[start:start + 4]])
            assert any(np.array_equal(group, ranked[i:i + 4]) for i in range(len(ranked) - 3))


def test_shards_after_crosses_into_the_next_epoch():
    plan = order(window_shards=4)
    e0, e1 = plan.epoch(0), plan.epoch(1)
    assert plan.shards_after(0, 0, 3) == (e0.window_shards(1).tolist() + e1.window_shards(0).tolist())[:3]


@pytest.mark.parametrize(("start", "k", "wrap", "expected"), [
    ((0, 0), 0, True, (0, 0)),
    ((0, 0), 2, True, (0, 8)),
    ((0, 0), 3, True, (1, 0)),     # 10 rows, global batch 4: steps at 0, 4, 8, then a new epoch
    ((0, 0), 7, True, (2, 4)),
    ((0, 6), 1, True, (1, 0)),     # resumed mid-epoch at position 6: one batch (6..9) is left
    ((2, 5), 2, False, (3, 3)),    # a stream: position 25 + 8 = 33 = epoch 3, position 3
])
def test_batch_cursor(start, k, wrap, expected):
    assert batch_cursor(start, k, rows=10, global_batch=4, wrap=wrap) == expected


def test_rank_positions():
    assert rank_positions(12, rank=2, batch_size=3).tolist() == [18, 19, 20]


def test_mixture_counts_follow_weights_exactly_per_block():
    mix = Mixture([0.7, 0.2, 0.1], seed=3, block_size=100, shuffle=True)
    assert mix.counts.tolist() == [70, 20, 10]
    source, counter = mix.assign(np.arange(1000))
    assert np.bincount(source).tolist() == [700, 200, 100]
    for d, n in enumerate([700, 200, 100]):
        # each dataset reads its own samples 0..n-1, in stream order
        assert counter[source == d].tolist() == list(range(n))


def test_mixture_is_deterministic_random_access_and_keyed():
    q = np.arange(5000)
    a = Mixture([1, 3], seed=1, block_size=64, shuffle=True).assign(q)
    probe = np.array([4999, 17, 2048])
    b = Mixture([1, 3], seed=1, block_size=64, shuffle=True).assign(probe)
    assert a[0][probe].tolist() == b[0].tolist() and a[1][probe].tolist() == b[1].tolist()
    assert Mixture([1, 3], seed=2, block_size=64, shuffle=True).assign(q)[0].tolist() != a[0].tolist()


def test_unshuffled_mixture_spreads_sources_evenly():
    source, _ = Mixture([0.5, 0.25, 0.25], seed=0, block_size=8, shuffle=False).assign(np.arange(8))
    assert source.tolist() == [0, 1, 2, 0, 0, 1, 2, 0]


def test_mixture_refuses_weights_the_block_cannot_hold():
    with pytest.raises(ConfigError, match=r"mix_block_size: a block of 10 samples gives no slot to source 1"):
        Mixture([1.0, 0.01], seed=0, block_size=10, shuffle=True)


@settings(max_examples=60, deadline=None)
@given(shards=st.lists(st.integers(0, 40), min_size=1, max_size=9).filter(lambda s: sum(s) > 0),
       window=st.integers(1, 5), shuffle=st.booleans(), bucketing=st.booleans(), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 50), group=st.integers(1, 12), cut=st.data())
def test_every_epoch_order_is_a_random_access_permutation(shards, window, shuffle, bucketing, seed, epoch, group,
                                                          cut):
    lengths = np.arange(sum(shards)) % 7
    offsets = np.cumsum([0] + shards)
    plan = RowOrder(shards, seed=seed, namespace=0, shuffle=shuffle, window_shards=window,
                    lengths=(lambda s: np.concatenate([lengths[offsets[i]:offsets[i + 1]] for i in s]))
                    if bucketing else None, group_size=group if bucketing else None)
    n = plan.num_rows
    rows = plan.epoch(epoch).rows(np.arange(n))
    assert sorted(rows.tolist()) == list(range(n))
    a = cut.draw(st.integers(0, n - 1))
    b = cut.draw(st.integers(a + 1, n))
    assert plan.epoch(epoch).rows_between(a, b).tolist() == rows[a:b].tolist()


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 60), batch=st.integers(1, 9), world=st.integers(1, 4), data=st.data())
def test_batches_cover_each_epoch_exactly_once_whatever_the_geometry(rows, batch, world, data):
    """Positions of all ranks over one epoch's batches: each of 0..N-1 once, the rest padding."""
    start = data.draw(st.integers(0, rows - 1))
    global_batch = batch * world
    seen, k = [], 0
    while batch_cursor((0, start), k, rows=rows, global_batch=global_batch, wrap=True)[0] == 0:
        _, position = batch_cursor((0, start), k, rows=rows, global_batch=global_batch, wrap=True)
        for rank in range(world):
            seen += [p for p in rank_positions(position, rank=rank, batch_size=batch).tolist() if p < rows]
        k += 1
    assert sorted(seen) == list(range(start, rows))
    assert batch_cursor((0, start), k, rows=rows, global_batch=global_batch, wrap=True) == (1, 0)
