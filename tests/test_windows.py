"""A bucket in windows: planning from keys and token counts, and windows that never depend on
how the bucket's payloads arrived."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlm_data.instances.donors import DonationConfig
from mlm_data.instances.windows import (
    assemble_window,
    plan_windows,
    row_keys_and_tokens,
    select_rows,
    window_tokens,
)
from mlm_data.stages.prepare_documents import assign_buckets

from helpers import random_docs, synthetic_docs


def payload(docs, *, seed=0):
    routed = assign_buckets(docs, num_buckets=1, validation_buckets=0, validation_fraction=0.0, id_type=pa.uint32(),
                            donations=DonationConfig(seed, 64))
    return routed[("train", 0)]


def windows(tables, *, max_tokens, seed=0, deduplicate=True):
    keys, tokens = zip(*(row_keys_and_tokens(t, seed=seed) for t in tables))
    plan = plan_windows(np.concatenate(keys), np.concatenate(tokens), max_tokens=max_tokens)
    out = []
    for w in range(plan.num_windows):
        parts = [p for p in (select_rows(t, plan, w, seed=seed) for t in tables) if p is not None]
        out.append(assemble_window(parts, seed=seed, deduplicate=deduplicate))
    return out


def test_window_tokens_follow_the_memory_knob():
    assert window_tokens(256) == 256 * 2**20 // 32
    assert window_tokens(1024) // 4 == window_tokens(256)
    assert window_tokens(512, dupe_factor=2) == window_tokens(256)


def test_plan_makes_full_windows_and_keeps_equal_keys_together():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=1000, dtype=np.uint64)
    keys[500:510] = keys[499]  # a run of equal keys (identical documents)
    tokens = rng.integers(1, 100, size=1000)
    budget = int(tokens.sum()) // 4 - 100  # four full windows and a small fifth
    plan = plan_windows(keys, tokens, max_tokens=budget)
    assert plan.num_windows == 5
    per_window = np.bincount(plan.window_of(keys), weights=tokens, minlength=5)
    assert (abs(per_window[:4] - budget) < 200).all() and per_window[4] < 600
    assert len(set(plan.window_of(keys[499:510]).tolist())) == 1
    assert plan_windows(keys, tokens, max_tokens=10**9).num_windows == 1


def test_windows_do_not_depend_on_how_payloads_arrive():
    docs = random_docs(np.random.default_rng(1), 120)
    table = payload(docs)
    budget = int(docs.doc_num_tokens().sum()) // 4
    whole = windows([table], max_tokens=budget)
    pieces = [table.slice(i, 17) for i in range(0, table.num_rows, 17)]
    shuffled = windows(pieces[::-1], max_tokens=budget)
    assert len(whole) == len(shuffled) >= 4
    for a, b in zip(whole, shuffled):
        assert a.docs.doc_ids == b.docs.doc_ids and a.num_sources == b.num_sources
        np.testing.assert_array_equal(a.docs.ids, b.docs.ids)
    # Every document is a source in exactly one window; every window has partners.
    sources = [d for w in whole for d in w.docs.doc_ids[:w.num_sources]]
    assert sorted(sources) == sorted(docs.doc_ids)
    assert all(w.docs.num_docs > w.num_sources for w in whole)


@pytest.mark.parametrize("deduplicate", [True, False])
def test_identical_documents_meet_in_one_window(deduplicate):
    lengths = [[5, 6], [7, 3, 2], [4], [9, 9]] * 10
    docs = synthetic_docs(lengths, ids=[f"doc{i:03d}" for i in range(40)])
    # Give documents 0, 4, 8, ... the same content (the same digest) as document 0.
    digests = docs.digests.copy()
    digests[::4] = digests[0]
    twins = type(docs)(docs.doc_ids, digests, docs.doc_offsets, docs.sent_offsets, docs.ids, docs.word_start)
    table = payload(twins)
    ws = windows([table.slice(0, 25), table.slice(25)], max_tokens=60, deduplicate=deduplicate)
    assert len(ws) > 3
    holding = [w for w in ws if "doc000" in w.docs.doc_ids[:w.num_sources]]
    assert len(holding) == 1
    kept = [d for d in holding[0].docs.doc_ids[:holding[0].num_sources] if int(d[3:]) % 4 == 0]
    assert kept == (["doc000"] if deduplicate else [f"doc{i:03d}" for i in range(0, 40, 4)])
    assert sum(w.duplicates for w in ws) == (9 if deduplicate else 0)
