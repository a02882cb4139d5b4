"""Masking: the invariants that static and dynamic masking both rely on."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data import seeding
from mlm_data.config.preprocess import MaskingConfig
from mlm_data.masking import IGNORE_INDEX, _span_lengths, mask_tokens, num_to_mask

CLS, SEP, PAD, MASK = 1, 2, 0, 3
VOCAB = np.arange(10, 1000)
MODES = {
    "token": {},
    "whole_word": {"whole_word": True},
    "span": {"span": True},
}


def keys_for(n: int, epoch: int = 0) -> np.ndarray:
    return seeding.keys_for(1234, "mask", epoch, index=np.arange(n))


def run(ids, maskable, word_start=None, keys=None, random_token_ids=VOCAB, **config):
    ids = np.asarray(ids)
    return mask_tokens(
        ids,
        maskable=np.asarray(maskable, dtype=bool),
        word_start=None if word_start is None else np.asarray(word_start, dtype=bool),
        keys=keys_for(len(ids)) if keys is None else keys,
        config=MaskingConfig(**config),
        mask_token_id=MASK,
        random_token_ids=random_token_ids,
    )


def realistic(rows: int, width: int, seed: int, word_lengths=(0.6, 0.25, 0.1, 0.05)):
    """BERT-like rows: [CLS] A [SEP] B [SEP] then padding, words of 1 to 4 tokens."""
    rng = np.random.default_rng(seed)
    length = rng.integers(width // 2, width + 1, rows)
    length[: rows // 2] = width
    sep = rng.integers(3, width // 2, rows)
    pos = np.arange(width)[None, :]
    maskable = (pos > 0) & (pos < length[:, None] - 1) & (pos != sep[:, None])
    sizes = rng.choice([1, 2, 3, 4], size=(rows, width), p=word_lengths)
    first = np.cumsum(sizes, axis=1) - sizes
    word_start = np.zeros((rows, width), dtype=bool)
    r = np.repeat(np.arange(rows), width)
    inside = first.ravel() < width
    word_start[r[inside], first.ravel()[inside]] = True
    ids = np.where(maskable, rng.integers(VOCAB[0], VOCAB[-1] + 1, (rows, width)), PAD)
    ids[:, 0] = CLS
    ids[pos == sep[:, None]] = SEP
    ids[pos == length[:, None] - 1] = SEP
    return ids.astype(np.int32), maskable, word_start


def same_word_pairs(maskable: np.ndarray, word_start: np.ndarray) -> np.ndarray:
    """True at p when tokens p-1 and p belong to the same word (the module's definition)."""
    pairs = np.zeros_like(maskable)
    pairs[:, 1:] = maskable[:, 1:] & maskable[:, :-1] & ~word_start[:, 1:]
    return pairs


def word_length_range(maskable, word_start):
    """Shortest and longest word of each row, in tokens (a huge shortest for a row without)."""
    word = np.cumsum(~same_word_pairs(maskable, word_start), axis=1)
    ranges = []
    for row_word, row_maskable in zip(word, maskable, strict=True):
        _, sizes = np.unique(row_word[row_maskable], return_counts=True)
        ranges.append((sizes.min(), sizes.max()) if sizes.size else (1 << 30, 0))
    return np.array(ranges).T


def assert_whole_words(chosen, maskable, word_start):
    pairs = same_word_pairs(maskable, word_start)
    left = np.zeros_like(chosen)
    left[:, 1:] = chosen[:, :-1]
    np.testing.assert_array_equal(chosen[pairs], left[pairs])


# ---- the budget ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_maskable", "probability", "max_predictions", "expected"),
    [
        (0, 0.15, None, 0),  # nothing to mask
        (1, 0.15, None, 1),  # 0.15 rounds to 0, raised to 1
        (3, 0.15, None, 1),  # 0.45 -> 0 -> 1
        (10, 0.15, None, 2),  # 1.5000000000000002 -> 2
        (5, 0.5, None, 2),  # 2.5 -> 2: half to even, as Python's round
        (7, 0.5, None, 4),  # 3.5 -> 4
        (126, 0.15, None, 19),  # 18.9 -> 19
        (126, 0.15, 20, 19),
        (510, 0.15, 20, 20),  # 76.5 capped
        (510, 0.15, 80, 76),  # 76.5 -> 76 (half to even)
    ],
)
def test_num_to_mask(n_maskable, probability, max_predictions, expected):
    config = MaskingConfig(probability=probability, max_predictions=max_predictions)
    assert num_to_mask(np.array([n_maskable]), config).tolist() == [expected]


@pytest.mark.parametrize("max_predictions", [None, 5])
def test_token_level_chooses_exactly_the_budget(max_predictions):
    ids, maskable, _ = realistic(300, 64, seed=1)
    _, labels = run(ids, maskable, max_predictions=max_predictions)
    expected = num_to_mask(maskable.sum(axis=1), MaskingConfig(max_predictions=max_predictions))
    np.testing.assert_array_equal((labels != IGNORE_INDEX).sum(axis=1), expected)


# ---- hand-built rows ----------------------------------------------------------------------

#            [CLS]  a    b    c  [SEP]  pad
ROW = [CLS, 11, 12, 13, SEP, PAD]
ROW_MASKABLE = [0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("mode", MODES)
def test_budget_covering_every_token_masks_every_maskable_token(mode):
    # round(0.9 * 3) = 3: all of a, b, c are chosen and all become [MASK].
    out, labels = run([ROW], [ROW_MASKABLE], probability=0.9, mask_token_fraction=1.0,
                      random_token_fraction=0.0, **MODES[mode])
    assert out.tolist() == [[CLS, MASK, MASK, MASK, SEP, PAD]]
    assert labels.tolist() == [[-100, 11, 12, 13, -100, -100]]


@pytest.mark.parametrize("mode", MODES)
def test_unchanged_share_keeps_ids_but_sets_labels(mode):
    out, labels = run([ROW], [ROW_MASKABLE], probability=0.9, mask_token_fraction=0.0,
                      random_token_fraction=0.0, **MODES[mode])
    assert out.tolist() == [ROW]
    assert labels.tolist() == [[-100, 11, 12, 13, -100, -100]]


@pytest.mark.parametrize(
    ("word_start", "maskable", "words"),
    [
        # "play ##ing ball": two words.
        ([0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [{1, 2}, {3}]),
        # A continuation right after [CLS] still starts a word (there is no word to join).
        ([0, 0, 0, 1, 0], [0, 1, 1, 1, 0], [{1, 2}, {3}]),
        # A word start on a special token is ignored; a [SEP] splits a word.
        ([1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1], [{1, 2}, {4, 5}]),
        # No word starts at all: each maskable run is one word.
        ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [{0, 1, 2, 3, 4}]),
    ],
)
@pytest.mark.parametrize("mode", ["whole_word", "span"])
def test_hand_built_words_are_chosen_whole(word_start, maskable, words, mode):
    n = 400
    ids = np.tile(np.arange(100, 100 + len(maskable)), (n, 1))
    _, labels = run(ids, np.tile(maskable, (n, 1)), np.tile(word_start, (n, 1)),
                    probability=0.3, **MODES[mode])
    seen = set()
    for row in labels != IGNORE_INDEX:
        chosen = set(np.flatnonzero(row).tolist())
        assert chosen, "a row with maskable tokens always gets a target"
        assert chosen == set().union(*[w for w in words if w & chosen])
        seen.add(frozenset(chosen))
    assert len(seen) == min(len(words), 2), "different keys choose different words"


def test_max_predictions_skips_words_that_do_not_fit():
    # Words "a ##b" (2 tokens) and "c" (1): with a cap of 1, only "c" can ever be chosen.
    n = 200
    ids = np.tile([CLS, 11, 12, 13, SEP], (n, 1))
    maskable = np.tile([0, 1, 1, 1, 0], (n, 1))
    word_start = np.tile([0, 1, 0, 1, 0], (n, 1))
    for mode in ("whole_word", "span"):
        _, labels = run(ids, maskable, word_start, probability=0.5, max_predictions=1, **MODES[mode])
        assert (labels[:, 3] == 13).all() and (labels[:, [0, 1, 2, 4]] == IGNORE_INDEX).all()


# ---- determinism and independence ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64])
def test_row_result_ignores_batch_neighbours_position_and_padding(mode, dtype):
    ids, maskable, word_start = realistic(24, 96, seed=2)
    ids = ids.astype(dtype)
    keys = keys_for(24)
    alone = [
        run(ids[i : i + 1, :60], maskable[i : i + 1, :60], word_start[i : i + 1, :60],
            keys=keys[i : i + 1], **MODES[mode])
        for i in range(24)
    ]
    # Reverse the batch and add padding full of junk ids and word starts.
    rng = np.random.default_rng(3)
    junk = rng.integers(0, 1000, (24, 40)).astype(dtype)
    big_ids = np.concatenate([ids[:, :60], junk], axis=1)[::-1]
    big_maskable = np.concatenate([maskable[:, :60], np.zeros((24, 40), bool)], axis=1)[::-1]
    big_starts = np.concatenate([word_start[:, :60], rng.random((24, 40)) < 0.5], axis=1)[::-1]
    out, labels = run(big_ids, big_maskable, big_starts, keys=keys[::-1], **MODES[mode])
    assert out.dtype == dtype and labels.dtype == np.int64
    for i, (row_out, row_labels) in enumerate(alone):
        np.testing.assert_array_equal(out[23 - i, :60], row_out[0])
        np.testing.assert_array_equal(labels[23 - i, :60], row_labels[0])
        np.testing.assert_array_equal(out[23 - i, 60:], big_ids[23 - i, 60:])
        assert (labels[23 - i, 60:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("mode", MODES)
def test_same_keys_same_mask_other_epoch_other_mask(mode):
    ids, maskable, word_start = realistic(64, 128, seed=4)
    first = run(ids, maskable, word_start, keys=keys_for(64, epoch=0), **MODES[mode])
    again = run(ids, maskable, word_start, keys=keys_for(64, epoch=0), **MODES[mode])
    other = run(ids, maskable, word_start, keys=keys_for(64, epoch=1), **MODES[mode])
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert ((first[1] != IGNORE_INDEX) != (other[1] != IGNORE_INDEX)).any(axis=1).all()


@pytest.mark.parametrize("mode", MODES)
def test_result_is_the_same_for_every_id_dtype(mode):
    ids, maskable, word_start = realistic(32, 64, seed=5)
    results = [run(ids.astype(dtype), maskable, word_start, **MODES[mode])
               for dtype in (np.uint16, np.uint32, np.int32, np.int64)]
    for out, labels in results[1:]:
        np.testing.assert_array_equal(out.astype(np.int64), results[0][0].astype(np.int64))
        np.testing.assert_array_equal(labels, results[0][1])


# ---- never special tokens, whole words, rates ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_non_maskable_positions_are_never_chosen(mode):
    ids, maskable, word_start = realistic(200, 128, seed=6)
    out, labels = run(ids, maskable, word_start, probability=0.6, **MODES[mode])
    assert (labels[~maskable] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(out[~maskable], ids[~maskable])


def test_rows_without_maskable_tokens_are_left_alone():
    ids, maskable, word_start = realistic(8, 32, seed=7)
    maskable[::2] = False
    for mode in MODES.values():
        out, labels = run(ids, maskable, word_start, **mode)
        assert (labels[::2] == IGNORE_INDEX).all() and (out[::2] == ids[::2]).all()
        assert ((labels[1::2] != IGNORE_INDEX).sum(axis=1) >= 1).all()


@pytest.mark.parametrize(
    ("mode", "tolerance", "word_lengths"),
    [
        ("whole_word", 0.015, (0.6, 0.25, 0.1, 0.05)),
        ("whole_word", 0.015, (0.25, 0.25, 0.25, 0.25)),
        ("span", 0.02, (0.6, 0.25, 0.1, 0.05)),
        ("span", 0.02, (0.25, 0.25, 0.25, 0.25)),
    ],
)
@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_word_and_span_rates_stay_close_to_probability(mode, tolerance, word_lengths, probability):
    ids, maskable, word_start = realistic(2000, 128, seed=8, word_lengths=word_lengths)
    _, labels = run(ids, maskable, word_start, probability=probability, **MODES[mode])
    chosen = labels != IGNORE_INDEX
    assert_whole_words(chosen, maskable, word_start)
    rate = chosen.sum() / maskable.sum()
    assert abs(rate - probability) <= tolerance, rate
    if mode == "whole_word":
        # Off the budget by less than the crossing word (words are at most 4 tokens).
        target = num_to_mask(maskable.sum(axis=1), MaskingConfig(probability=probability))
        assert np.abs(chosen.sum(axis=1) - target).max() <= 3


@pytest.mark.parametrize("mode", ["whole_word", "span"])
def test_expected_count_equals_an_odd_budget_of_two_token_words(mode):
    # 126 maskable tokens in 63 two-token words: the budget round(18.9) = 19 cannot be hit,
    # so a row takes 18 or 20 tokens, each half the time: 19 on average, not 20.
    rows = 2000
    ids = np.full((rows, 128), 500, np.int32)
    maskable = np.ones((rows, 128), dtype=bool)
    maskable[:, [0, 127]] = False
    word_start = np.zeros((rows, 128), dtype=bool)
    word_start[:, 1::2] = True
    _, labels = run(ids, maskable, word_start, **MODES[mode])
    counts = (labels != IGNORE_INDEX).sum(axis=1)
    assert set(counts.tolist()) == {18, 20}
    assert abs(counts.mean() - 19) < 0.1


@pytest.mark.parametrize("mode", ["whole_word", "span"])
def test_max_predictions_is_a_hard_cap(mode):
    ids, maskable, word_start = realistic(1000, 128, seed=9, word_lengths=(0.25, 0.25, 0.25, 0.25))
    _, labels = run(ids, maskable, word_start, max_predictions=15, **MODES[mode])
    counts = (labels != IGNORE_INDEX).sum(axis=1)
    assert counts.max() <= 15
    capped = num_to_mask(maskable.sum(axis=1), MaskingConfig()) >= 15
    assert capped.sum() > 500
    assert counts[capped].mean() > 13.5  # only the word crossing the cap is left out


def test_spans_are_runs_of_several_words_and_whole_words_are_not():
    ids, maskable, word_start = realistic(1000, 128, seed=10)

    def words_per_run(config):
        chosen = run(ids, maskable, word_start, **config)[1] != IGNORE_INDEX
        run_starts = chosen.copy()
        run_starts[:, 1:] &= ~chosen[:, :-1]
        return (chosen & word_start).sum() / run_starts.sum()

    assert words_per_run(MODES["whole_word"]) < 1.3
    assert words_per_run(MODES["span"]) > 2.5
    assert words_per_run({"span": True, "span_geometric_p": 1.0}) < 1.3


def test_span_lengths_follow_spanberts_truncated_geometric():
    u = (np.arange(100_000) + 0.5) / 100_000
    lengths = _span_lengths(u, MaskingConfig(span=True))  # p = 0.2, at most 10 words
    k = np.arange(1, 11)
    weights = 0.2 * 0.8 ** (k - 1)
    expected = weights / weights.sum()
    np.testing.assert_allclose(np.bincount(lengths, minlength=11)[1:] / u.size, expected, atol=1e-4)
    assert round((k * expected).sum(), 1) == 3.8  # SpanBERT's "mean span length 3.8 words"


# ---- 80/10/10 -----------------------------------------------------------------------------


def test_replacement_shares_and_random_ids():
    rows, width = 400, 512
    ids = np.full((rows, width), 999, dtype=np.uint16)  # never a replacement candidate
    maskable = np.ones((rows, width), dtype=bool)
    allowed = np.array([20, 40, 60, 80, 100])
    out, labels = run(ids, maskable, probability=0.5, random_token_ids=allowed)
    chosen = labels != IGNORE_INDEX
    n = chosen.sum()
    assert n == rows * width // 2
    masked = out[chosen] == MASK
    random = np.isin(out[chosen], allowed)
    kept = out[chosen] == 999
    assert (masked | random | kept).all()
    # Five standard deviations of a binomial share over ~100k draws is below 0.007.
    assert abs(masked.mean() - 0.8) < 0.007
    assert abs(random.mean() - 0.1) < 0.007
    assert abs(kept.mean() - 0.1) < 0.007
    shares = np.bincount(out[chosen][random], minlength=101)[allowed] / random.sum()
    np.testing.assert_allclose(shares, 0.2, atol=0.02)
    assert (out[~chosen] == 999).all()


# ---- property test ------------------------------------------------------------------------


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 5))
    width = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, width + 1, rows)
    pos = np.arange(width)[None, :]
    real = pos < lengths[:, None]
    maskable = real & (rng.random((rows, width)) < draw(st.floats(0.3, 1.0)))
    word_start = rng.random((rows, width)) < draw(st.floats(0.1, 1.0))
    ids = rng.integers(10, 1000, (rows, width))
    dtype = draw(st.sampled_from([np.uint16, np.uint32, np.int32, np.int64]))
    mode = draw(st.sampled_from(sorted(MODES)))
    config = MaskingConfig(
        probability=draw(st.floats(0.01, 0.95)),
        max_predictions=draw(st.one_of(st.none(), st.integers(1, 12))),
        span_geometric_p=draw(st.floats(0.05, 1.0)),
        max_span_length=draw(st.integers(1, 12)),
        **MODES[mode],
    )
    use_words = draw(st.booleans())
    return ids.astype(dtype), maskable, word_start if use_words else None, lengths, config, mode


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(batches())
def test_property_invariants(batch):
    ids, maskable, word_start, lengths, config, mode = batch
    keys = keys_for(len(ids), epoch=len(ids))
    kwargs = {"config": config, "mask_token_id": MASK, "random_token_ids": VOCAB}
    out, labels = mask_tokens(ids, maskable=maskable, word_start=word_start, keys=keys, **kwargs)
    chosen = labels != IGNORE_INDEX

    assert out.dtype == ids.dtype and out.shape == ids.shape
    assert not chosen[~maskable].any()
    np.testing.assert_array_equal(labels[chosen], ids[chosen])

    starts = maskable if word_start is None else word_start
    counts = chosen.sum(axis=1)
    target = num_to_mask(maskable.sum(axis=1), config)
    cap = config.max_predictions or ids.shape[1]
    assert (counts <= cap).all()
    if mode == "token":
        np.testing.assert_array_equal(counts, target)
    else:
        assert_whole_words(chosen, maskable, starts)
        # The longest word in each row bounds how far off the budget a row can land.
        shortest, longest = word_length_range(maskable, starts)
        slack = np.maximum(longest - 1, 0) * (1 if mode == "whole_word" else 6)
        assert (counts <= np.maximum(target + slack, longest)).all()
        assert (counts[shortest <= cap] >= 1).all()
        if mode == "whole_word":
            assert (counts >= target - slack).all()

    for i, length in enumerate(lengths):
        row_ws = None if word_start is None else word_start[i : i + 1, :length]
        row_out, row_labels = mask_tokens(
            ids[i : i + 1, :length], maskable=maskable[i : i + 1, :length],
            word_start=row_ws, keys=keys[i : i + 1], **kwargs,
        )
        np.testing.assert_array_equal(row_out[0], out[i, :length])
        np.testing.assert_array_equal(row_labels[0], labels[i, :length])


# ---- errors and edges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maskable": np.ones((2, 3), bool)}, "maskable: must be bool of shape"),
        ({"keys": np.zeros(3, np.uint64)}, "keys: must be integers of shape"),
        ({"word_start": np.ones((2, 5), bool)}, "word_start: must be None or of shape"),
        ({"random_token_ids": np.array([], np.int64)}, "random_token_ids: must not be empty"),
        ({"mask_token_id": 70_000}, "mask_token_id: 70000 does not fit uint16"),
        ({"random_token_ids": np.array([5, 65_536])}, r"random_token_ids: values 5\.\.65536"),
        ({"input_ids": np.zeros(4, np.int32)}, "input_ids: must be a 2-D integer array"),
    ],
)
def test_bad_arguments_raise_one_clear_error(change, message):
    args = {
        "input_ids": np.zeros((2, 4), np.uint16),
        "maskable": np.ones((2, 4), bool),
        "word_start": None,
        "keys": np.zeros(2, np.uint64),
        "config": MaskingConfig(),
        "mask_token_id": MASK,
        "random_token_ids": VOCAB,
    }
    args.update(change)
    ids = args.pop("input_ids")
    with pytest.raises(ValueError, match=message):
        mask_tokens(ids, **args)


def test_no_random_ids_needed_when_random_share_is_zero():
    out, labels = run([ROW], [ROW_MASKABLE], random_token_ids=np.array([], np.int64),
                      random_token_fraction=0.0)
    assert (labels != IGNORE_INDEX).sum() == 1


@pytest.mark.parametrize("shape", [(0, 8), (3, 0)])
@pytest.mark.parametrize("mode", MODES)
def test_empty_batches(shape, mode):
    ids = np.zeros(shape, np.int64)
    out, labels = run(ids, np.zeros(shape, bool), np.zeros(shape, bool), **MODES[mode])
    assert out.shape == labels.shape == shape


def test_module_needs_neither_beam_nor_torch():
    code = "import sys, mlm_data.masking; print(sorted({'apache_beam', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Worked out once by the first implementation (partition of 64-bit ranks, 2-D indexing): a
# faster implementation must give every row the same mask, or resumed runs and static
# datasets made before it would disagree with what it makes now.
PINNED = {
    "token": ([[100, 3, 3, 103, 104, 105, 106, 107, 3, 3, 110, 111], [112, 113, 114, 115, 116, 117, 118, 119, 3, 3, 3, 123]],
              [[-100, 101, 102, -100, -100, -100, -100, -100, 108, 109, -100, -100],
               [-100, -100, -100, 115, -100, -100, -100, -100, 120, 121, 122, -100]]),
    "whole_word": ([[100, 3, 3, 103, 104, 105, 106, 107, 108, 3, 18, 111], [112, 113, 114, 115, 116, 117, 118, 119, 3, 3, 3, 123]],
                   [[-100, 101, 102, -100, -100, -100, -100, -100, -100, 109, 110, -100],
                    [-100, -100, -100, 115, -100, -100, -100, -100, 120, 121, 122, -100]]),
    "span": ([[100, 3, 3, 11, 104, 105, 106, 107, 108, 109, 110, 111], [112, 113, 114, 115, 116, 117, 118, 119, 3, 3, 3, 123]],
             [[-100, 101, 102, 103, -100, -100, -100, -100, -100, -100, -100, -100],
              [-100, -100, -100, 115, -100, -100, -100, -100, 120, 121, 122, -100]]),
}


@pytest.mark.parametrize("mode", MODES)
def test_masks_are_the_ones_earlier_versions_made(mode):
    ids = np.arange(100, 124).reshape(2, 12)
    maskable = np.ones((2, 12), dtype=bool)
    maskable[:, [0, -1]] = False
    word_start = np.array([[1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1]] * 2, dtype=bool)
    out, labels = run(ids, maskable, word_start, keys=seeding.keys_for(7, "mask", 0, index=np.arange(2)),
                      random_token_ids=np.arange(10, 20), probability=0.4, **MODES[mode])
    assert (out.tolist(), labels.tolist()) == PINNED[mode]


def test_equal_random_scores_rank_by_column(monkeypatch):
    """Scores keep 31 random bits; where two positions draw the same bits, the left one ranks
    first, so exactly the budget is chosen and the choice does not depend on the sort."""
    real = seeding.random_bits

    def coarse(key, *counters):  # 4 distinct scores per row: ties everywhere
        return (real(key, *counters) >> np.uint64(62)) << np.uint64(33)

    monkeypatch.setattr(seeding, "random_bits", coarse)
    rows, width = 64, 40
    maskable = np.random.default_rng(0).random((rows, width)) < 0.8
    keys = keys_for(rows)
    _, labels = run(np.full((rows, width), 50), maskable, keys=keys, probability=0.3)
    score = coarse(keys[:, None], 1 << 8, np.arange(width, dtype=np.uint64)[None, :]) >> np.uint64(33)
    target = num_to_mask(maskable.sum(axis=1), MaskingConfig(probability=0.3))
    for r in range(rows):
        order = np.lexsort((np.arange(width), score[r]))  # by score, then column
        expected = [c for c in order if maskable[r, c]][:target[r]]
        assert sorted(np.flatnonzero(labels[r] != IGNORE_INDEX).tolist()) == sorted(expected)
