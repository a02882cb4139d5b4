"""BERT pair creation: Google's semantics, checked as invariants over many documents."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.instances.pairing import create_nsp_instances, truncate_lengths
from mlm_data.instances.rows import gather_index, take

from helpers import bucket_windows, one_window, random_docs, synthetic_docs


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


def pairs(window, **kw):
    return create_nsp_instances(window.docs, num_sources=window.num_sources, **kw)


@pytest.mark.parametrize("max_len", [16, 64, 128])
def test_pair_invariants(max_len):
    window = one_window(random_docs(np.random.default_rng(0), 300), seed=3, max_seq_length=max_len)
    docs, n_src = window.docs, window.num_sources
    assert n_src == 300 and docs.num_docs > n_src  # sources, then donated segments
    inst = pairs(window, max_seq_length=max_len, short_seq_prob=0.1, random_next_prob=0.5, seed=3)
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
    assert (doc_b0[rand] >= n_src).all()            # random next comes from a donated segment ...
    same_source = (docs.digests[doc_b0[rand]] == docs.digests[doc_a0[rand]]).all(axis=1)
    assert not same_source.any()                    # ... never one of the same document
    whole = rand & ~inst.truncated
    starts = docs.doc_token_offsets()[doc_b0[whole]]
    np.testing.assert_array_equal(inst.b_start[whole], starts)  # B reads the segment from its start
    assert (doc_b0[~rand] == doc_a0[~rand]).all()   # actual next is the same document ...
    assert (inst.b_start[~rand] >= inst.a_end[~rand]).all()  # ... after A
    assert inst.dropped_chunks == 0


def test_actual_next_continues_a_when_untruncated():
    window = one_window(random_docs(np.random.default_rng(1), 200, tokens=(2, 6)), seed=1)
    inst = pairs(window, max_seq_length=128, short_seq_prob=0.0, random_next_prob=0.5, seed=1)
    clean = ~inst.is_random_next & ~inst.truncated
    assert clean.sum() > 50
    np.testing.assert_array_equal(inst.b_start[clean], inst.a_end[clean])
    # and A starts on a sentence boundary
    assert np.isin(inst.a_start[clean], window.docs.sent_offsets).all()


def test_nsp_ratio_and_lengths_over_many_documents():
    window = one_window(random_docs(np.random.default_rng(2), 1500, sentences=(20, 40), tokens=(5, 15)), seed=9)
    inst = pairs(window, max_seq_length=128, short_seq_prob=0.1, random_next_prob=0.5, seed=9)
    assert inst.num_rows > 4000
    # Google's rule forces random-next for one-sentence chunks, so the share sits a little above 0.5.
    assert 0.48 < inst.is_random_next.mean() < 0.56


def test_short_seq_prob_shortens_rows():
    window = one_window(random_docs(np.random.default_rng(2), 400, sentences=(20, 40), tokens=(5, 15)), seed=9)

    def mean_len(p: float) -> float:
        inst = pairs(window, max_seq_length=128, short_seq_prob=p, random_next_prob=0.5, seed=9)
        return float(((inst.a_end - inst.a_start) + (inst.b_end - inst.b_start)).mean())

    full, some, all_short = mean_len(0.0), mean_len(0.1), mean_len(1.0)
    assert all_short < 0.7 * full  # a random target in [2, max] averages about half of max
    assert all_short < some < full


def test_random_next_prob_zero_and_one():
    window = one_window(random_docs(np.random.default_rng(3), 200, sentences=(5, 20)), seed=1, max_seq_length=64)
    never = pairs(window, max_seq_length=64, short_seq_prob=0, random_next_prob=0.0, seed=1)
    always = pairs(window, max_seq_length=64, short_seq_prob=0, random_next_prob=1.0, seed=1)
    assert always.is_random_next.all()
    # Only one-sentence chunks are random when the probability is 0.
    assert never.is_random_next.mean() < 0.15


def test_a_document_alone_is_never_its_own_partner_and_what_it_loses_is_counted():
    # One document and only its own donated segment in the window: no random partner exists.
    # One-sentence chunks cannot be pairs then; they are dropped and counted with their tokens.
    # The first sentence fills a chunk alone (13 tokens = max_seq_length - 3); the other three
    # make one chunk with a true continuation.
    window = one_window(synthetic_docs([[13, 4, 4, 4]]), seed=1, max_seq_length=16)
    assert window.num_sources == 1 and window.docs.num_docs == 2
    inst = pairs(window, max_seq_length=16, short_seq_prob=0, random_next_prob=1.0, seed=1)
    assert inst.num_rows == 1 and not inst.is_random_next.any()
    assert inst.a_start[0] == 13 and inst.b_end[0] == 25
    assert (inst.dropped_chunks, inst.dropped_tokens) == (1, 13)


def test_deterministic_and_seed_dependent():
    window = one_window(random_docs(np.random.default_rng(4), 100), seed=1, max_seq_length=64)
    kw = dict(max_seq_length=64, short_seq_prob=0.1, random_next_prob=0.5)
    a = pairs(window, seed=1, **kw)
    b = pairs(window, seed=1, **kw)
    c = pairs(window, seed=2, **kw)
    np.testing.assert_array_equal(a.a_start, b.a_start)
    np.testing.assert_array_equal(a.b_end, b.b_end)
    assert not (len(a.a_start) == len(c.a_start) and np.array_equal(a.a_start, c.a_start))


def test_pieces_assemble_cls_a_sep_b_sep():
    docs = synthetic_docs([[3, 3], [2, 2]], id_offset=10)
    inst = create_nsp_instances(docs, num_sources=2, max_seq_length=32, short_seq_prob=0, random_next_prob=0.0,
                                seed=0)
    src, const, offsets = gather_index(inst.pieces(cls_id=1, sep_id=2))
    ids = take(docs.ids, src, const)
    first = ids[offsets[0]:offsets[1]].tolist()
    assert first == [1, 10, 11, 12, 2, 13, 14, 15, 2]
    assert inst.segment_b_start()[0] == 5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=8), min_size=1, max_size=12),
       st.integers(8, 64), st.floats(0, 1), st.integers(0, 3))
def test_property_lengths_and_provenance(sent_lengths, max_len, p_random, seed):
    window = one_window(synthetic_docs(sent_lengths), seed=seed, max_seq_length=max_len)
    docs = window.docs
    inst = pairs(window, max_seq_length=max_len, short_seq_prob=0.2, random_next_prob=p_random, seed=seed)
    a_len, b_len = inst.a_end - inst.a_start, inst.b_end - inst.b_start
    assert ((a_len >= 1) & (b_len >= 1) & (a_len + b_len <= max_len - 3)).all()
    rand = inst.is_random_next
    b_doc = doc_of_token(docs, inst.b_start)[rand]
    assert (b_doc >= window.num_sources).all()
    assert not (docs.digests[b_doc] == docs.digests[inst.doc_index[rand]]).all(axis=1).any()
    # Every token of every source document is in A or B of some row, or counted as dropped.
    covered = np.zeros(int(docs.doc_token_offsets()[window.num_sources]), dtype=bool)
    for a0, a1 in zip(inst.a_start.tolist(), inst.a_end.tolist()):
        covered[a0:a1] = True
    for b0, b1, r in zip(inst.b_start.tolist(), inst.b_end.tolist(), rand.tolist()):
        if not r:
            covered[b0:b1] = True
    assert int((~covered).sum()) >= inst.dropped_tokens


def google_reference(doc_sentence_lengths: list[list[int]], *, max_seq_length: int, short_seq_prob: float,
                     random_next_prob: float, seed: int) -> dict[str, np.ndarray]:
    """Google's create_instances_from_document, written again over sentence lengths: a random
    next partner is a random other document of the whole corpus and a random start sentence in
    it, drawn afresh for every pair. Returns per row the lengths of A and B, the random-next
    flag and whether truncation cut tokens."""
    rng = np.random.default_rng(seed)
    max_tokens = max_seq_length - 3
    out: dict[str, list] = {"a": [], "b": [], "random": [], "truncated": []}
    for index, doc in enumerate(doc_sentence_lengths):
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk: list[int] = []
        i = 0
        while i < len(doc):
            chunk.append(doc[i])
            if i == len(doc) - 1 or sum(chunk) >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                len_a = sum(chunk[:a_end])
                random_next = len(chunk) == 1 or rng.random() < random_next_prob
                if random_next:
                    other = index
                    while other == index:
                        other = int(rng.integers(0, len(doc_sentence_lengths)))
                    partner = doc_sentence_lengths[other]
                    len_b = 0
                    for n in partner[int(rng.integers(0, len(partner))):]:
                        len_b += n
                        if len_b >= target - len_a:
                            break
                    i -= len(chunk) - a_end
                else:
                    len_b = sum(chunk[a_end:])
                cut_a, cut_b = google_truncation(len_a, len_b, max_tokens)
                out["a"].append(len_a - cut_a)
                out["b"].append(len_b - cut_b)
                out["random"].append(random_next)
                out["truncated"].append(bool(cut_a or cut_b))
                chunk = []
            i += 1
    return {k: np.asarray(v) for k, v in out.items()}


def test_pairs_follow_googles_distributions():
    """Everything but the partner source follows Google step by step; the partner is a donated
    segment (a random document's random start sentence, drawn when it is donated) instead of a
    fresh draw per pair. Over many documents the two agree on every figure users look at."""
    rng = np.random.default_rng(11)
    lengths = [rng.integers(3, 26, size=int(rng.integers(1, 31))).tolist() for _ in range(2000)]
    kw = dict(max_seq_length=128, short_seq_prob=0.1, random_next_prob=0.5)
    ref = google_reference(lengths, seed=5, **kw)
    inst = pairs(one_window(synthetic_docs(lengths), seed=5), seed=5, **kw)
    ours = {"a": inst.a_end - inst.a_start, "b": inst.b_end - inst.b_start, "random": inst.is_random_next,
            "truncated": inst.truncated}
    assert abs(len(ours["a"]) / len(ref["a"]) - 1) < 0.03
    assert abs(ours["random"].mean() - ref["random"].mean()) < 0.02
    assert abs(ours["truncated"].mean() - ref["truncated"].mean()) < 0.03
    for part in ("a", "b"):
        for rand in (True, False):
            mine, theirs = ours[part][ours["random"] == rand].mean(), ref[part][ref["random"] == rand].mean()
            assert abs(mine / theirs - 1) < 0.05, (part, rand, mine, theirs)


def test_random_next_sources_do_not_depend_on_the_bucket_count():
    """A random-next partner comes from anywhere in the corpus, whatever the bucket count.

    Measured against a fixed partition of the documents into 16 classes (the one 16 buckets
    would make): with partners drawn inside a bucket, every partner of a 16-bucket run would
    share its row's class; drawn corpus-wide, 1 in 16 does, for 1, 4 or 16 buckets alike. The
    share of documents that serve as a partner source stays the same too."""
    from mlm_data.instances.donors import first8

    docs = random_docs(np.random.default_rng(6), 1500, sentences=(2, 30))
    same_class, coverage = {}, {}
    for num_buckets in (1, 4, 16):
        same = total = 0
        sources: set[str] = set()
        for windows in bucket_windows(docs, num_buckets=num_buckets, seed=5).values():
            for window in windows:
                inst = pairs(window, max_seq_length=128, short_seq_prob=0.1, random_next_prob=0.5, seed=5)
                rand = inst.is_random_next
                b_doc = doc_of_token(window.docs, inst.b_start[rand])
                klass = first8(window.docs.digests) % np.uint64(16)
                same += int((klass[b_doc] == klass[inst.doc_index[rand]]).sum())
                total += int(rand.sum())
                sources.update(window.docs.doc_ids[i] for i in b_doc.tolist())
        same_class[num_buckets] = same / total
        coverage[num_buckets] = len(sources) / docs.num_docs
    for num_buckets in (1, 4, 16):
        assert abs(same_class[num_buckets] - 1 / 16) < 0.03, same_class
        assert abs(coverage[num_buckets] - coverage[1]) < 0.05, coverage
