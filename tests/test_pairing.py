"""BERT pair creation: Google's semantics, checked as invariants over many documents."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.instances.pairing import create_nsp_instances, truncate_lengths
from mlm_data.instances.rows import gather_index, take

from helpers import random_docs, synthetic_docs


def google_truncation(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """The reference loop from create_pretraining_data.py, counting removals."""
    cut_a = cut_b = 0
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a, cut_a = len_a - 1, cut_a + 1
        else:
            len_b, cut_b = len_b - 1, cut_b + 1
    return cut_a, cut_b


@pytest.mark.parametrize("a,b,m,expected", [
    (10, 3, 9, (4, 0)),    # only A is longer than the gap
    (5, 5, 7, (1, 2)),     # ties trim B first, then alternate
    (4, 9, 10, (0, 3)),
    (3, 3, 10, (0, 0)),
    (100, 1, 10, (91, 0)),
    (6, 4, 5, (3, 2)),
])
def test_truncate_lengths_hand_worked(a, b, m, expected):
    assert truncate_lengths(a, b, m) == expected


@given(st.integers(1, 300), st.integers(1, 300), st.integers(2, 300))
def test_truncate_lengths_matches_google_loop(a, b, m):
    assert truncate_lengths(a, b, m) == google_truncation(a, b, m)


def doc_of_token(docs, token_index: np.ndarray) -> np.ndarray:
    return np.searchsorted(docs.doc_token_offsets(), token_index, side="right") - 1


@pytest.mark.parametrize("max_len", [16, 64, 128])
def test_pair_invariants(max_len):
    docs = random_docs(np.random.default_rng(0), 300)
    inst = create_nsp_instances(docs, max_seq_length=max_len, short_seq_prob=0.1, random_next_prob=0.5, seed=3)
    a_len, b_len = inst.a_end - inst.a_start, inst.b_end - inst.b_start
    assert (a_len >= 1).all() and (b_len >= 1).all()
    assert (a_len + b_len <= max_len - 3).all()
    doc_a0 = doc_of_token(docs, inst.a_start)
    doc_a1 = doc_of_token(docs, inst.a_end - 1)
    doc_b0 = doc_of_token(docs, inst.b_start)
    doc_b1 = doc_of_token(docs, inst.b_end - 1)
    assert (doc_a0 == doc_a1).all() and (doc_a0 == inst.doc_index).all()  # A lies inside its document
    assert (doc_b0 == doc_b1).all()                                      # so does B
    rand = inst.is_random_next
    assert (doc_b0[rand] != doc_a0[rand]).all()     # random next is never from the same document
    assert (doc_b0[~rand] == doc_a0[~rand]).all()   # actual next is the same document ...
    assert (inst.b_start[~rand] >= inst.a_end[~rand]).all()  # ... after A


def test_actual_next_continues_a_when_untruncated():
    docs = random_docs(np.random.default_rng(1), 200, tokens=(2, 6))
    inst = create_nsp_instances(docs, max_seq_length=128, short_seq_prob=0.0, random_next_prob=0.5, seed=1)
    clean = ~inst.is_random_next & ~inst.truncated
    assert clean.sum() > 50
    np.testing.assert_array_equal(inst.b_start[clean], inst.a_end[clean])
    # and A starts on a sentence boundary
    assert np.isin(inst.a_start[clean], docs.sent_offsets).all()


def test_nsp_ratio_and_lengths_over_many_documents():
    docs = random_docs(np.random.default_rng(2), 1500, sentences=(20, 40), tokens=(5, 15))
    inst = create_nsp_instances(docs, max_seq_length=128, short_seq_prob=0.1, random_next_prob=0.5, seed=9)
    assert inst.num_rows > 4000
    # Google's rule forces random-next for one-sentence chunks, so the share sits a little above 0.5.
    assert 0.48 < inst.is_random_next.mean() < 0.56


def test_short_seq_prob_shortens_rows():
    docs = random_docs(np.random.default_rng(2), 400, sentences=(20, 40), tokens=(5, 15))

    def mean_len(p: float) -> float:
        inst = create_nsp_instances(docs, max_seq_length=128, short_seq_prob=p, random_next_prob=0.5, seed=9)
        return float(((inst.a_end - inst.a_start) + (inst.b_end - inst.b_start)).mean())

    full, some, all_short = mean_len(0.0), mean_len(0.1), mean_len(1.0)
    assert all_short < 0.7 * full  # a random target in [2, max] averages about half of max
    assert all_short < some < full


def test_random_next_prob_zero_and_one():
    docs = random_docs(np.random.default_rng(3), 200, sentences=(5, 20))
    never = create_nsp_instances(docs, max_seq_length=64, short_seq_prob=0, random_next_prob=0.0, seed=1)
    always = create_nsp_instances(docs, max_seq_length=64, short_seq_prob=0, random_next_prob=1.0, seed=1)
    assert always.is_random_next.all()
    # Only one-sentence chunks are random when the probability is 0.
    assert never.is_random_next.mean() < 0.15


def test_single_document_bucket_never_pairs_with_itself():
    docs = synthetic_docs([[4, 4, 4, 4, 4, 4]])
    inst = create_nsp_instances(docs, max_seq_length=16, short_seq_prob=0, random_next_prob=1.0, seed=1)
    assert inst.num_rows >= 1
    assert not inst.is_random_next.any()


def test_deterministic_and_seed_dependent():
    docs = random_docs(np.random.default_rng(4), 100)
    kw = dict(max_seq_length=64, short_seq_prob=0.1, random_next_prob=0.5)
    a = create_nsp_instances(docs, seed=1, **kw)
    b = create_nsp_instances(docs, seed=1, **kw)
    c = create_nsp_instances(docs, seed=2, **kw)
    np.testing.assert_array_equal(a.a_start, b.a_start)
    np.testing.assert_array_equal(a.b_end, b.b_end)
    assert not (len(a.a_start) == len(c.a_start) and np.array_equal(a.a_start, c.a_start))


def test_pieces_assemble_cls_a_sep_b_sep():
    docs = synthetic_docs([[3, 3], [2, 2]], id_offset=10)
    inst = create_nsp_instances(docs, max_seq_length=32, short_seq_prob=0, random_next_prob=0.0, seed=0)
    src, const, offsets = gather_index(inst.pieces(cls_id=1, sep_id=2))
    ids = take(docs.ids, src, const)
    first = ids[offsets[0]:offsets[1]].tolist()
    assert first == [1, 10, 11, 12, 2, 13, 14, 15, 2]
    assert inst.segment_b_start()[0] == 5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=8), min_size=1, max_size=12),
       st.integers(8, 64), st.floats(0, 1), st.integers(0, 3))
def test_property_lengths_and_provenance(sent_lengths, max_len, p_random, seed):
    docs = synthetic_docs(sent_lengths)
    inst = create_nsp_instances(docs, max_seq_length=max_len, short_seq_prob=0.2, random_next_prob=p_random, seed=seed)
    a_len, b_len = inst.a_end - inst.a_start, inst.b_end - inst.b_start
    assert ((a_len >= 1) & (b_len >= 1) & (a_len + b_len <= max_len - 3)).all()
    rand = inst.is_random_next
    assert (doc_of_token(docs, inst.b_start)[rand] != inst.doc_index[rand]).all()
