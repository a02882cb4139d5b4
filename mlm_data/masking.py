"""Masked-language-model corruption: the one implementation behind static and dynamic masking.

The pipeline masks once and stores the result (Google's recipe); the trainer's collator masks
again every epoch (RoBERTa's). Both call ``mask_tokens`` so the two cannot drift apart.

Every random number is a counter-based draw ``seeding.random_bits(row_key, stream, position)``,
so a row's mask is a pure function of its key and its own tokens: it does not change with its
batch neighbours, its place in the batch or the padding the batch adds. That is what makes a
resumed epoch, a different batch size or a different worker count give identical masks.

Selection works on three kinds of unit. Token-level masking ranks maskable tokens by a random
score and keeps exactly the budget. Whole-word and span masking rank words (or spans of
words) by a random score and take them in that order by a cumulative sum of their token
lengths; the unit that crosses the budget is cut to whole words and its last word is taken
with probability (tokens still needed) / (its length), so the expected count equals the budget
exactly instead of drifting up by half a word per row.
"""

from __future__ import annotations

import numpy as np

from mlm_data import seeding
from mlm_data.config.preprocess import MaskingConfig
from mlm_data.dataset.schema import IGNORE_INDEX

# Stream ids: each kind of draw has its own first counter, so no two draws share bits.
# Span rounds add the round number (fewer than 256).
_CHOOSE = 1 << 8
_ACTION = 2 << 8
_REPLACEMENT = 3 << 8
_STREAMS = np.array([_ACTION, _REPLACEMENT], dtype=np.uint64)
_UNIT_SCORE = 4 << 8
_SPAN_LENGTH = 5 << 8
_ROUNDING = 6 << 8
_LOW = np.uint64(0xFFFFFFFF)
_LAST = np.uint64(1 << 63)
_SPAN_ROUNDS = 5
"""Span masking draws spans this many times, each round refilling what overlaps lost in the
one before. A round loses a few percent of what it adds (3% at probability 0.15, 13% at 0.4
on 128-token rows), so after five the total is within 0.1% of the budget on average."""


def num_to_mask(n_maskable: np.ndarray | int, config: MaskingConfig) -> np.ndarray:
    """How many tokens each row should predict: ``round(probability * n)`` of its ``n``
    *maskable* tokens (special tokens and padding excluded; Python's half-to-even rounding), at
    least 1 for a row with any maskable token (a row without a target gives the loss nothing),
    at most ``max_predictions``.

    Google's ``create_masked_lm_predictions`` takes ``round(probability * len(tokens))`` over
    the whole row, its [CLS] and [SEP]s included, though they can never be chosen. Counting
    only what can be chosen makes the masked share of real tokens exactly ``probability``; on
    full rows the two agree (a 128-token pair row has 125 maskable tokens: 19 either way).

    >>> num_to_mask(np.array([0, 3, 10, 200]), MaskingConfig(max_predictions=20)).tolist()
    [0, 1, 2, 20]
    """
    n = np.asarray(n_maskable, dtype=np.int64)
    target = np.rint(config.probability * n).astype(np.int64)
    target = np.maximum(target, (n > 0).astype(np.int64))
    if config.max_predictions is not None:
        target = np.minimum(target, config.max_predictions)
    return target


def mask_tokens(
    input_ids: np.ndarray,
    *,
    maskable: np.ndarray,
    word_start: np.ndarray | None,
    keys: np.ndarray,
    config: MaskingConfig,
    mask_token_id: int,
    random_token_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose positions to predict and corrupt them 80/10/10; return ``(masked_ids, labels)``.

    ``input_ids`` is ``(B, T)``, rows right-padded; ``maskable`` is False on special tokens and
    padding, which are never chosen. ``word_start`` marks word-initial tokens for whole-word
    and span masking (``None``: every token is a word); a maskable token right after a
    non-maskable one always starts a word, so every maskable token belongs to exactly one word.
    ``keys`` holds one key per row (``seeding.keys_for(seed, "mask", epoch, index=ids)``).

    ``masked_ids`` has the input's shape and dtype; ``labels`` is int64 with the original id
    at chosen positions and ``IGNORE_INDEX`` elsewhere. A chosen position becomes
    ``mask_token_id`` with probability ``mask_token_fraction``, a uniform draw from
    ``random_token_ids`` (which may equal the original) with probability
    ``random_token_fraction``, and stays as it is otherwise.

    The number chosen per row is ``num_to_mask`` exactly for token-level masking; for whole
    words and spans it is that budget in expectation (within one word of it for whole words),
    never above ``max_predictions``, and at least one word for a row with a maskable token
    unless every word of the row is longer than ``max_predictions``.
    """
    ids = np.asarray(input_ids)
    maskable = np.asarray(maskable)
    keys = np.asarray(keys)
    random_ids = np.asarray(random_token_ids)
    _check(ids, maskable, word_start, keys, config, mask_token_id, random_ids)
    maskable = maskable.astype(bool, copy=False)
    keys = keys.astype(np.uint64, copy=False)
    if ids.size == 0:
        chosen = np.zeros(ids.shape, dtype=bool)
    elif config.span or config.whole_word:
        starts = _word_starts(maskable, word_start)
        chosen = _choose_words(maskable, starts, keys, config)
    else:
        chosen = _choose_tokens(maskable, keys, config)
    return _corrupt(ids, chosen, keys, config, mask_token_id, random_ids)


def _check(
    ids: np.ndarray,
    maskable: np.ndarray,
    word_start: np.ndarray | None,
    keys: np.ndarray,
    config: MaskingConfig,
    mask_token_id: int,
    random_ids: np.ndarray,
) -> None:
    """Raise one ValueError naming every bad argument: they are caller bugs, found early."""
    errors = []
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        errors.append(f"input_ids: must be a 2-D integer array, found {ids.dtype} {ids.shape}")
    if maskable.shape != ids.shape or maskable.dtype != bool:
        errors.append(f"maskable: must be bool of shape {ids.shape}, found {maskable.dtype} {maskable.shape}")
    if word_start is not None and np.shape(word_start) != ids.shape:
        errors.append(f"word_start: must be None or of shape {ids.shape}, found {np.shape(word_start)}")
    if keys.shape != ids.shape[:1] or keys.dtype.kind not in "iu":
        errors.append(f"keys: must be integers of shape {ids.shape[:1]}, found {keys.dtype} {keys.shape}")
    if random_ids.ndim != 1 or (random_ids.size and random_ids.dtype.kind not in "iu"):
        errors.append(f"random_token_ids: must be a 1-D integer array, found {random_ids.dtype} {random_ids.shape}")
    elif config.random_token_fraction > 0 and random_ids.size == 0:
        errors.append("random_token_ids: must not be empty when random_token_fraction > 0")
    if ids.dtype.kind in "iu":
        info = np.iinfo(ids.dtype)
        if not info.min <= mask_token_id <= info.max:
            errors.append(f"mask_token_id: {mask_token_id} does not fit {ids.dtype}")
        if random_ids.ndim == 1 and random_ids.size and random_ids.dtype.kind in "iu":
            low, high = int(random_ids.min()), int(random_ids.max())
            if low < info.min or high > info.max:
                errors.append(f"random_token_ids: values {low}..{high} do not fit {ids.dtype}")
    if errors:
        raise ValueError("mask_tokens: " + "; ".join(errors))


def _choose_tokens(maskable: np.ndarray, keys: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """Exactly ``num_to_mask`` maskable positions per row, uniformly at random.

    Positions are ranked by 31 random bits, ties broken by column (the order ``_ranked``
    defines); a threshold at the row's ``target``-th smallest score picks them. The scores are
    sorted as ``uint32``, several times faster than partitioning the 64-bit ``_ranked`` keys,
    and the rare row whose threshold value is shared by several positions takes the leftmost
    of them, so the result is the one that ranking gives.
    """
    rows, width = maskable.shape
    bits = seeding.random_bits(keys[:, None], _CHOOSE, np.arange(width, dtype=np.uint64)[None, :])
    bits >>= np.uint64(33)
    score = bits.astype(np.uint32)  # (B, T) 31 random bits
    np.copyto(score, np.uint32(0xFFFFFFFF), where=~maskable)  # after every candidate
    target = num_to_mask(np.count_nonzero(maskable, axis=1), config)
    ranked = np.sort(score, axis=1)
    kth = np.take_along_axis(ranked, np.maximum(target - 1, 0)[:, None], axis=1)  # (B, 1)
    chosen = score <= kth
    chosen &= (target > 0)[:, None]
    # The threshold takes too many only where the score after it is equal to it.
    after = np.take_along_axis(ranked, np.minimum(target, width - 1)[:, None], axis=1)[:, 0]
    over = np.flatnonzero((after == kth[:, 0]) & (target > 0) & (target < width))
    if over.size:  # equal scores at the threshold: keep the leftmost ones, as column order ranks them
        tie = score[over] == kth[over]
        extra = chosen[over].sum(axis=1) - target[over]
        drop = tie & (np.cumsum(tie[:, ::-1], axis=1)[:, ::-1] <= extra[:, None])
        chosen[over] &= ~drop
    return chosen


def _ranked(keys: np.ndarray, stream: int, index: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Random sort keys that are unique per row and carry their own column index.

    31 random bits above a 32-bit column index: ties in the random bits (about 1 in 2**31 per
    pair) fall back to column order, which padding cannot change, and ``sorted & _LOW``
    recovers the argsort from a plain (much faster) sort of values. Non-candidates set the
    top bit, so they sort after every candidate.
    """
    rank = seeding.random_bits(keys[:, None], stream, index.astype(np.uint64))
    rank >>= np.uint64(33)
    rank <<= np.uint64(32)
    np.copyto(rank, _LAST, where=~candidate)
    rank |= np.arange(candidate.shape[1], dtype=np.uint64)
    return rank


def _word_starts(maskable: np.ndarray, word_start: np.ndarray | None) -> np.ndarray:
    """Maskable word starts, plus any maskable token after a non-maskable one: a continuation
    right after [CLS] or [SEP] has no word to join, and must still be choosable."""
    if word_start is None:
        return maskable.copy()
    after_gap = np.ones_like(maskable)
    after_gap[:, 1:] = ~maskable[:, :-1]
    return maskable & (np.asarray(word_start, dtype=bool) | after_gap)


def _choose_words(
    maskable: np.ndarray, starts: np.ndarray, keys: np.ndarray, config: MaskingConfig
) -> np.ndarray:
    """Whole words, or spans of whole words, as one procedure: a word is a span of length 1.

    Work happens in word space, ``(B, W)`` with word ``j`` of a row in column ``j``; ``W`` is
    the batch's largest word count, and the columns past a row's last word are inert.
    """
    rows, width = maskable.shape
    n_words = starts.sum(axis=1)
    n_cols = max(int(n_words.max()), 1)
    cols = np.arange(n_cols)[None, :]
    valid = cols < n_words[:, None]
    token_word = np.cumsum(starts, axis=1) - 1  # (B, T): word of each maskable token

    # Word j of row b starts at token word_pos[b, j] and is word_len[b, j] tokens long.
    r, c = np.nonzero(starts)
    j = token_word[r, c]
    boundary = np.where(starts | ~maskable, np.arange(width)[None, :], width)
    next_boundary = np.full((rows, width), width)
    next_boundary[:, :-1] = np.minimum.accumulate(boundary[:, :0:-1], axis=1)[:, ::-1]
    word_pos = np.full((rows, n_cols), width, dtype=np.int64)
    word_pos[r, j] = c
    word_len = np.zeros((rows, n_cols), dtype=np.int64)
    word_len[r, j] = next_boundary[r, c] - c
    cumtok = np.zeros((rows, n_cols + 1), dtype=np.int64)  # tokens in words before column k
    np.cumsum(word_len, axis=1, out=cumtok[:, 1:])
    counters = word_pos.astype(np.uint64)

    target = num_to_mask(maskable.sum(axis=1), config)
    cap = np.full(rows, np.iinfo(np.int64).max if config.max_predictions is None else config.max_predictions)
    if not config.span:
        score = _ranked(keys, _UNIT_SCORE, counters, valid)
        end = np.broadcast_to(cols + 1, (rows, n_cols))
        covered, _ = _take_units(score, end, cumtok, word_len, target, cap, keys, 0)
    else:
        # A span stops before a special token: spans are contiguous text, not [SEP]-crossing.
        run_start = np.zeros((rows, n_cols), dtype=bool)
        run_start[r, j] = (c == 0) | ~maskable[r, np.maximum(c - 1, 0)]
        breaks = np.where(run_start & valid, cols, n_words[:, None])
        run_end = np.empty_like(breaks)
        run_end[:, -1] = n_words
        run_end[:, :-1] = np.minimum.accumulate(breaks[:, :0:-1], axis=1)[:, ::-1]
        run_end = np.minimum(run_end, n_words[:, None])
        covered = np.zeros((rows, n_cols), dtype=bool)
        need, count = target, np.zeros(rows, dtype=np.int64)
        for round_ in range(_SPAN_ROUNDS):
            if not (need > 0).any():
                break
            score = _ranked(keys, _UNIT_SCORE + round_, counters, valid & ~covered)
            length = _span_lengths(
                seeding.uniform(keys[:, None], _SPAN_LENGTH + round_, counters), config
            )
            end = np.minimum(cols + length, run_end)
            taken, nominal = _take_units(score, end, cumtok, word_len, need, cap - count, keys, round_)
            covered |= taken
            new_count = (word_len * covered).sum(axis=1)
            # Refill only what overlaps lost; the rounding of the crossing word is already
            # unbiased, and refilling its shortfall would bias the rate upwards.
            need = np.minimum(nominal - (new_count - count), cap - new_count)
            count = new_count
    covered_token = np.take_along_axis(covered, np.clip(token_word, 0, n_cols - 1), axis=1)
    return covered_token & maskable


def _span_lengths(u: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """Geometric span lengths in words, truncated to ``max_span_length`` by inverse CDF.

    Truncated and renormalised as SpanBERT's code does (mean 3.8 words for p=0.2, max 10),
    rather than piling the tail's mass on the longest length.
    """
    p, longest = config.span_geometric_p, config.max_span_length
    if p >= 1.0:
        return np.ones(u.shape, dtype=np.int64)
    log_q = np.log1p(-p)
    tail = np.expm1(longest * log_q)  # (1-p)**longest - 1, in (-1, 0)
    length = 1 + np.floor(np.log1p(u * tail) / log_q).astype(np.int64)
    return np.clip(length, 1, longest)


def _take_units(
    score: np.ndarray,
    end: np.ndarray,
    cumtok: np.ndarray,
    word_len: np.ndarray,
    need: np.ndarray,
    room: np.ndarray,
    keys: np.ndarray,
    round_: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Take units (word ``j`` up to word ``end[b, j]``) in score order until ``need`` tokens.

    Units whose running total stays below ``need`` are taken whole. The unit that reaches it
    is cut to the fewest words that reach it, and its last word is kept with probability
    (tokens still needed) / (that word's length), dropped if it would exceed ``room``. In
    round 0 a row that would take nothing takes the first word, in unit order, that fits
    ``room`` (Google's loop likewise skips words that do not fit ``max_predictions``).
    Returns the words covered ``(B, W)`` and the tokens taken counting overlaps twice ``(B,)``.
    """
    rows, n_cols = score.shape
    row = np.arange(rows)
    ranked = np.sort(score, axis=1)
    first = (ranked & _LOW).astype(np.intp)  # units' first words, in the order they are taken
    candidate = ranked < _LAST
    last = np.take_along_axis(end, first, axis=1)
    size = np.take_along_axis(cumtok, last, axis=1) - np.take_along_axis(cumtok, first, axis=1)
    total = np.cumsum(np.where(candidate, size, 0), axis=1)
    whole = candidate & (total < need[:, None])
    n_whole = whole.sum(axis=1)
    before = np.where(whole, total, 0).max(axis=1, initial=0)
    crossing = (n_whole < candidate.sum(axis=1)) & (need > 0)

    # The crossing unit starts at word j; it is cut after the first word that meets the need.
    j = first[row, np.minimum(n_whole, n_cols - 1)]
    j_tok = cumtok[row, j]
    still = need - before
    cut = np.maximum((cumtok < (j_tok + still)[:, None]).sum(axis=1), j + 1)
    last_word = cut - 1
    last_len = word_len[row, last_word]
    last_need = still - (cumtok[row, last_word] - j_tok)
    coin = seeding.uniform(keys, _ROUNDING + round_, 0)
    keep_last = (coin * last_len < last_need) & (before + cumtok[row, cut] - j_tok <= room)
    cross_end = np.where(crossing, np.where(keep_last, cut, last_word), j)
    if round_ == 0:
        # A row with a budget predicts something: its first unit whose first word fits.
        fits = candidate & (word_len[row[:, None], first] <= room[:, None])
        force = crossing & (n_whole == 0) & (cross_end == j) & fits.any(axis=1)
        j = np.where(force, first[row, fits.argmax(axis=1)], j)
        j_tok = cumtok[row, j]
        cross_end = np.where(force, j + 1, cross_end)

    # Mark every taken unit [first, last) with a +1/-1 difference array in word space.
    stride = n_cols + 1
    base = row * stride
    open_at = np.concatenate([(base[:, None] + first)[whole], base + j])
    close_at = np.concatenate([(base[:, None] + last)[whole], base + cross_end])
    depth = np.bincount(open_at, minlength=rows * stride) - np.bincount(close_at, minlength=rows * stride)
    covered = np.cumsum(depth.reshape(rows, stride), axis=1)[:, :n_cols] > 0
    return covered, before + cumtok[row, cross_end] - j_tok


def _corrupt(
    ids: np.ndarray,
    chosen: np.ndarray,
    keys: np.ndarray,
    config: MaskingConfig,
    mask_token_id: int,
    random_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply 80/10/10 to the chosen positions only: draws cost nothing where nothing happens.

    Works on flat indices (one ``flatnonzero`` and 1-D fancy indexing, several times cheaper
    than their 2-D forms)."""
    width = ids.shape[1]
    flat = np.flatnonzero(chosen)
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    labels.reshape(-1)[flat] = ids.reshape(-1)[flat]
    out = ids.copy()
    r = flat // width
    position = (flat - r * width).astype(np.uint64)
    # random_bits(key, stream, position): the (key, stream) part per row, the position per token.
    per_row = seeding.random_bits(keys[:, None], _STREAMS)  # (B, 2): action, replacement
    action = seeding.to_unit(seeding.fold(per_row[r, 0], position, slot=1))
    to_mask = action < config.mask_token_fraction
    to_random = ~to_mask & (action < config.mask_token_fraction + config.random_token_fraction)
    flat_out = out.reshape(-1)
    if to_random.any():
        u = seeding.to_unit(seeding.fold(per_row[r[to_random], 1], position[to_random], slot=1))
        pick = np.minimum((u * random_ids.size).astype(np.int64), random_ids.size - 1)
        flat_out[flat[to_random]] = random_ids[pick]
    flat_out[flat[to_mask]] = mask_token_id
    return out, labels

