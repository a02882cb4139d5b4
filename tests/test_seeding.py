"""Keyed randomness: stable values, independence of inputs, sane distributions."""

from __future__ import annotations

import numpy as np

from mlm_data.seeding import KeyedRandom, derive_key, fold, keys_for, random_bits, uniform


def test_derive_key_is_stable_and_distinguishes_parts():
    # Pinned: a change here silently changes every dataset and every mask.
    assert derive_key(12345, "pairs", 0, "a.txt#0") == derive_key(12345, "pairs", 0, "a.txt#0")
    keys = {derive_key(1, "p", 1, 2), derive_key(1, "p", 12), derive_key(1, "p", "1", 2), derive_key(2, "p", 1, 2),
            derive_key(1, "q", 1, 2)}
    assert len(keys) == 5


def test_keyed_random_stream_and_distributions():
    rng = KeyedRandom(42)
    # CPython guarantees this stream for an integer seed; pin it so a change is noticed.
    assert [round(rng.random(), 12) for _ in range(2)] == [0.639426798458, 0.025010755223]
    r = KeyedRandom(7)
    draws = [r.randint(2, 5) for _ in range(4000)]
    assert set(draws) == {2, 3, 4, 5}
    assert abs(np.mean(draws) - 3.5) < 0.06
    heads = [KeyedRandom(k).binomial_half(100) for k in range(2000)]
    assert abs(np.mean(heads) - 50) < 0.5


def test_uniform_is_counter_based():
    key = derive_key(3, "mask", 0)
    a = uniform(key, np.arange(10), 0)
    b = uniform(key, np.arange(20), 0)[:10]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(uniform(key, np.arange(10), 1), a)
    big = uniform(key, np.arange(200_000), 0)
    assert 0 <= big.min() and big.max() < 1
    assert abs(big.mean() - 0.5) < 0.005
    counts, _ = np.histogram(big, bins=10, range=(0, 1))
    assert counts.min() > 19_000


def test_keys_for_rows_independent_of_batching():
    all_keys = keys_for(5, "mask", 1, index=np.arange(100))
    part = keys_for(5, "mask", 1, index=np.arange(40, 60))
    np.testing.assert_array_equal(all_keys[40:60], part)
    assert len(set(all_keys.tolist())) == 100
    assert not np.array_equal(keys_for(5, "mask", 2, index=np.arange(100)), all_keys)


def test_fold_finishes_a_partial_hash():
    key = derive_key(3, "mask", 0)
    rows = random_bits(np.array([key, key + 1], dtype=np.uint64), 5)  # per row: (key, 5)
    positions = np.arange(7, dtype=np.uint64)
    np.testing.assert_array_equal(fold(rows[:, None], positions[None, :], slot=1),
                                  random_bits(np.array([key, key + 1], dtype=np.uint64)[:, None], 5, positions[None, :]))
    assert fold(random_bits(key), 9, slot=0) == random_bits(key, 9)
