"""Labelled records to shard rows: tokenization, label alignment, windows, label vocabulary.

Two stages, because label ids need the whole dataset's label vocabulary and tokenization does
not. ``encode_tagged`` / ``encode_texts`` turn a batch of records into rows that still carry
their labels as strings (``to_arrow`` is the payload between pipeline stages); once the
vocabulary is known (given, reused from another dataset, or ``order_labels`` of every label
seen), ``tagged_table`` / ``text_table`` assign the ids and build the shard table, dropping
every example that has a label outside the vocabulary.

Token classification aligns word tags to sub-tokens the usual way (HF ``run_ner``): the tag on
a word's first sub-token and -100 on the rest, or on every sub-token with
``label_all_subtokens``. A sentence longer than a row becomes several *windows*, cut on word
boundaries; each window after the first repeats up to ``stride`` tokens of whole words from
the previous one as unlabelled context, so every word is labelled in exactly one window and an
evaluator can stitch a sentence back together from ``(example_id, window_index)``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from mlm_data.dataset.schema import IGNORE_INDEX
from mlm_data.dataset.shards import list_array
from mlm_data.errors import ConfigError
from mlm_data.instances.rows import (
    fixed_pieces,
    gather_index,
    offsets_from_lengths,
    ranges_index,
    take,
)
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence
from mlm_data.text.tokenizer import TextEncoder

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def order_labels(labels: Iterable[str]) -> list[str]:
    """The label vocabulary (its order gives the ids) when none is configured.

    The rule depends only on the set of labels, never on the order they were seen in:

    * every label an integer written plainly ("0", "7", "-1"): numeric order, so that a
      dataset labelled 0..n-1 keeps its ids (string order would put "10" before "2");
    * otherwise "O" (the outside tag of BIO/IOB schemes) first when present, so it gets id 0,
      then the rest in code point order.

    >>> order_labels(["I-PER", "O", "B-PER", "O"]), order_labels(["10", "2", "0"])
    (['O', 'B-PER', 'I-PER'], ['0', '2', '10'])
    """
    unique = set(labels)
    if unique and all(_INTEGER.fullmatch(label) for label in unique):
        return sorted(unique, key=int)
    return (["O"] if "O" in unique else []) + sorted(unique - {"O"})


def example_ids(doc_ids: Sequence[str]) -> np.ndarray:
    """(R,) uint64 stable ids of records: the first 8 bytes (little-endian) of
    ``blake2b(doc_id.encode("utf-8"), digest_size=8)``, reproducible in any language."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(d.encode("utf-8"), digest_size=8).digest(), "little") for d in doc_ids),
        dtype=np.uint64, count=len(doc_ids),
    )


def label_ids(
    label_strings: pa.Array | pa.ChunkedArray | Sequence[str | None],
    vocabulary: Sequence[str],
    *,
    offsets: np.ndarray | None = None,
    dtype: type[np.integer] = np.int16,
) -> tuple[np.ndarray, np.ndarray]:
    """Label ids for label strings, vectorised; nulls (unlabelled positions) get -100.

    Returns ``(ids, unknown)``: ``ids`` of ``dtype`` with ``IGNORE_INDEX`` where a label is null
    or outside ``vocabulary``, and ``unknown``, True where a label is outside the vocabulary:
    per value, or per row when ``offsets`` (R+1) say which values form a row.

    >>> ids, unknown = label_ids(["O", None, "B-X", "?"], ["O", "B-X"], offsets=np.array([0, 2, 4]))
    >>> ids.tolist(), unknown.tolist()
    ([0, -100, 1, -100], [False, True])
    """
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("the label vocabulary has duplicates")
    limit = int(np.iinfo(dtype).max)
    if len(vocabulary) > limit + 1:
        raise ConfigError(f"labels: {len(vocabulary)} labels do not fit the schema's {np.dtype(dtype).name} "
                          f"label ids (at most {limit + 1} labels)")
    if isinstance(label_strings, pa.ChunkedArray):
        values = label_strings.combine_chunks()
    elif isinstance(label_strings, pa.Array):
        values = label_strings
    else:
        values = pa.array(list(label_strings), type=pa.string())
    index = pc.index_in(values, value_set=pa.array(list(vocabulary), type=pa.string()))
    unknown = pc.and_(pc.is_valid(values), pc.is_null(index)).to_numpy(zero_copy_only=False)
    ids = index.fill_null(IGNORE_INDEX).to_numpy(zero_copy_only=False).astype(dtype)
    if offsets is not None:
        seen = np.concatenate([[0], np.cumsum(unknown, dtype=np.int64)])
        unknown = seen[offsets[1:]] > seen[offsets[:-1]]
    return ids, unknown


# --------------------------------------------------------------------------------------------
# Token classification


@dataclass(frozen=True)
class TaggedRows:
    """Windows of tagged sentences, flat: row ``r`` is tokens ``offsets[r]:offsets[r+1]``.

    A sentence's windows are consecutive rows, in order. The last three fields are facts about
    the ``encode_tagged`` call for the caller's counters; ``select``, ``to_arrow`` and
    ``from_arrow`` carry rows only and leave them empty.
    """

    doc_ids: tuple[str, ...]   # (R,) the sentence id of each row
    window_index: np.ndarray   # (R,) int64: 0, 1, ... within a sentence
    offsets: np.ndarray        # (R+1,) int64
    ids: np.ndarray            # (N,) uint32, [CLS] and [SEP] included
    word_start: np.ndarray     # (N,) bool; specials and context words count as words
    labels: pa.Array           # (N,) string: the tag, or null where the token is not scored
    no_tokens: tuple[str, ...] = ()
    """Sentences that produced no token at all (no rows): the caller drops them as ``no_tokens``."""
    words_without_tokens: int = 0
    """Words that produced no token (a lone control character): their tag is in no row."""
    truncated_words: int = 0
    """Words longer than a window, cut to it (the cut tokens are in no row)."""

    @property
    def num_rows(self) -> int:
        return len(self.doc_ids)

    def select(self, rows: Sequence[int] | np.ndarray) -> TaggedRows:
        """The rows at ``rows``, in that order (e.g. one bucket's share of a batch)."""
        rows = np.asarray(rows, dtype=np.int64)
        tokens, offsets = _row_tokens(self.offsets, rows)
        return TaggedRows(
            doc_ids=tuple(self.doc_ids[r] for r in rows.tolist()), window_index=self.window_index[rows],
            offsets=offsets, ids=self.ids[tokens], word_start=self.word_start[tokens],
            labels=self.labels.take(pa.array(tokens, type=pa.int64())),
        )

    def to_arrow(self) -> pa.RecordBatch:
        """One record batch, one row per window, labels still strings (the shuffle payload)."""
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.doc_ids, type=pa.string()),
                pa.array(self.window_index.astype(np.int32)),
                list_array(self.ids, self.offsets, pa.uint32()),
                list_array(self.word_start, self.offsets, pa.bool_()),
                pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), self.labels),
            ],
            names=["doc_id", "window_index", "input_ids", "word_start", "labels"],
        )

    @classmethod
    def from_arrow(cls, data: pa.Table | pa.RecordBatch) -> TaggedRows:
        table = _as_table(data)
        offsets, ids = _flat(table.column("input_ids"))
        return cls(
            doc_ids=tuple(table.column("doc_id").to_pylist()),
            window_index=table.column("window_index").to_numpy().astype(np.int64),
            offsets=offsets, ids=ids.to_numpy().astype(np.uint32),
            word_start=_flat(table.column("word_start"))[1].to_numpy(zero_copy_only=False).astype(bool),
            labels=_flat(table.column("labels"))[1],
        )

    @classmethod
    def concat(cls, parts: Iterable[TaggedRows | pa.RecordBatch | pa.Table]) -> TaggedRows:
        """All rows of ``parts``, ordered by ``(doc_id, window_index)``: the result does not
        depend on the order the parts arrived in."""
        return cls.from_arrow(_sorted_concat(parts, ["doc_id", "window_index"]))


def encode_tagged(
    tok: Tokenizer,
    sentences: Sequence[TaggedSentence],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    stride: int,
    label_all_subtokens: bool,
) -> TaggedRows:
    """Tokenize pre-split sentences in one batched call, align their tags, cut them into windows.

    Each row is ``[CLS] context words labelled words [SEP]`` with at most ``max_seq_length``
    tokens. Windows are filled greedily with whole words; a window after the first starts with
    the whole words just before its first labelled word, from the previous window, as long as
    they add up to at most ``stride`` tokens and leave room for that word (fewer, or none,
    otherwise). A word longer than ``max_seq_length - 2`` tokens fills a window on its own, cut
    to it (its first token keeps the tag). Labels: the word's tag on its first sub-token, null
    on the others, or the tag on every sub-token when ``label_all_subtokens``.

    Example, words of 2, 3, 1 and 2 tokens, ``max_seq_length=6`` (4 per window), ``stride=2``:
    rows are ``[w0]``, ``[w1 w2]`` and ``[(w2) w3]`` where ``(w2)`` is unlabelled context.
    """
    budget = max_seq_length - 2
    if budget < 1 or stride < 0:
        raise ValueError(f"need max_seq_length >= 3 and stride >= 0, got {max_seq_length} and {stride}")
    encodings = tok.encode_batch([list(s.words) for s in sentences], is_pretokenized=True, add_special_tokens=False)
    n_tokens = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    n_words = np.fromiter((len(s.words) for s in sentences), dtype=np.int64, count=len(sentences))
    total = int(n_tokens.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.uint32, count=total)
    word = _word_ids([e.word_ids for e in encodings], total)
    # Global word index of every token. Tokens come in word order; the accumulate only
    # matters if a tokenizer ever gave a token no word (it then joins the word before).
    word_base = offsets_from_lengths(n_words)
    sentence_of = np.repeat(np.arange(len(sentences)), n_tokens)
    word = np.maximum.accumulate(word_base[:-1][sentence_of] + np.maximum(word, 0)) if total else word
    word_tokens = np.bincount(word, minlength=int(word_base[-1]))
    word_offsets = offsets_from_lengths(word_tokens)
    first_of_word = np.zeros(total, dtype=bool)
    first_of_word[word_offsets[:-1][word_tokens > 0]] = True

    windows: list[tuple[int, int, int, int, int, bool]] = []  # sentence, window, c, s, e, truncated
    no_tokens: list[str] = []
    for k, s in enumerate(sentences):
        w0 = int(word_base[k])
        lengths = word_tokens[w0:w0 + len(s.words)].tolist()
        if not any(lengths):
            no_tokens.append(s.id)
            continue
        for i, (c, first, end, cut) in enumerate(_windows(lengths, budget, stride)):
            windows.append((k, i, w0 + c, w0 + first, w0 + end, cut))
    w = np.array(windows, dtype=np.int64).reshape(-1, 6)
    sent, truncated = w[:, 0], w[:, 5].astype(bool)
    begin, labelled_from = word_offsets[w[:, 2]], word_offsets[w[:, 3]]
    end = np.where(truncated, labelled_from + budget, word_offsets[w[:, 4]])
    r = len(w)
    pieces = fixed_pieces(
        start=np.stack([np.zeros(r, np.int64), begin, np.zeros(r, np.int64)], axis=1),
        length=np.stack([np.ones(r, np.int64), end - begin, np.ones(r, np.int64)], axis=1),
        const=np.tile(np.array([cls_id, -1, sep_id], dtype=np.int64), (r, 1)),
    )
    src, const, offsets = gather_index(pieces)
    row_of = np.repeat(np.arange(r), np.diff(offsets))
    scored = (const < 0) & (src >= labelled_from[row_of])
    if not label_all_subtokens:
        scored &= first_of_word[src]
    tags = pa.array(list(itertools.chain.from_iterable(s.tags for s in sentences)), type=pa.string())
    return TaggedRows(
        doc_ids=tuple(sentences[k].id for k in sent.tolist()),
        window_index=w[:, 1].copy(),
        offsets=offsets,
        ids=take(ids, src, const),
        word_start=take(first_of_word, src, const, const_value=True),
        labels=tags.take(pa.array(word[src], mask=~scored, type=pa.int64())),
        no_tokens=tuple(no_tokens),
        words_without_tokens=int((word_tokens == 0).sum()),
        truncated_words=int(truncated.sum()),
    )


def _word_ids(lists: list[list[int | None]], total: int) -> np.ndarray:
    try:
        return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=total)
    except TypeError:  # a token without a word (None); not seen with pre-split input
        return np.fromiter((-1 if w is None else w for w in itertools.chain.from_iterable(lists)),
                           dtype=np.int64, count=total)


def _windows(lengths: list[int], budget: int, stride: int) -> list[tuple[int, int, int, bool]]:
    """Windows over words of ``lengths`` tokens: ``(context_start, first_labelled, end, cut)``.

    >>> _windows([2, 3, 1, 2], budget=4, stride=2)
    [(0, 0, 1, False), (1, 1, 3, False), (2, 3, 4, False)]
    >>> _windows([1, 6, 1], budget=4, stride=2)
    [(0, 0, 1, False), (1, 1, 2, True), (2, 2, 3, False)]
    >>> _windows([0, 6, 0, 5], budget=4, stride=2)
    [(0, 0, 3, True), (3, 3, 4, True)]
    """
    out: list[tuple[int, int, int, bool]] = []
    n, first, previous_start = len(lengths), 0, 0
    while first < n:
        # The first word with tokens decides (words without tokens ride along for free), so
        # no window is left with nothing to label.
        lead = next((i for i in range(first, n) if lengths[i]), first)
        context_start, context = first, 0
        if out:
            while context_start > previous_start and context + lengths[context_start - 1] <= stride:
                context_start -= 1
                context += lengths[context_start]
        while context_start < first and context + lengths[lead] > budget:
            context -= lengths[context_start]
            context_start += 1
        cut = lengths[lead] > budget
        used, end = (budget, lead + 1) if cut else (context, first)
        while end < n and used + lengths[end] <= budget:
            used += lengths[end]
            end += 1
        assert end > first, "a window must label at least one word"
        out.append((context_start, first, end, cut))
        previous_start, first = context_start, end
    return out


def tagged_table(
    rows: TaggedRows, vocabulary: Sequence[str], schema: pa.Schema
) -> tuple[pa.Table, tuple[str, ...], tuple[str, ...]]:
    """The shard table of ``rows`` with label ids from ``vocabulary``, in row order.

    A sentence with any tag outside the vocabulary loses all its windows. Returns the table,
    the ids of the sentences kept and of those dropped as ``unknown_label`` (each once, in
    order of first row). Columns are those of ``schema``, from: ``input_ids``, ``word_start``,
    ``labels`` (int16, -100 where not scored), ``example_id`` (``example_ids`` of the sentence)
    and ``window_index`` (uint16).
    """
    label_col, unknown = label_ids(rows.labels, vocabulary, offsets=rows.offsets, dtype=np.int16)
    keep, kept, dropped = _keep_documents(rows.doc_ids, unknown)
    tokens, offsets = _row_tokens(rows.offsets, keep)
    windows = rows.window_index[keep]
    if len(windows) and windows.max() > np.iinfo(np.uint16).max:
        raise ValueError("a sentence has more than 65536 windows; raise instances.max_seq_length")
    id_type = schema.field("input_ids").type.value_type
    columns = {
        "input_ids": lambda: list_array(rows.ids[tokens], offsets, id_type),
        "word_start": lambda: list_array(rows.word_start[tokens], offsets, pa.bool_()),
        "labels": lambda: list_array(label_col[tokens], offsets, pa.int16()),
        "example_id": lambda: pa.array(example_ids([rows.doc_ids[r] for r in keep.tolist()]), type=pa.uint64()),
        "window_index": lambda: pa.array(windows.astype(np.uint16), type=pa.uint16()),
    }
    return _table(columns, schema, "token_classification"), kept, dropped


# --------------------------------------------------------------------------------------------
# Sequence classification


@dataclass(frozen=True)
class TextRows:
    """Sequence classification examples, one row each, flat like ``TaggedRows``."""

    doc_ids: tuple[str, ...]     # (R,) the record id of each row
    offsets: np.ndarray          # (R+1,) int64
    ids: np.ndarray              # (N,) uint32: [CLS] A [SEP] or [CLS] A [SEP] B [SEP]
    word_start: np.ndarray       # (N,) bool
    segment_b_start: np.ndarray  # (R,) int64: index of B's first token, -1 without a pair
    truncated: np.ndarray        # (R,) bool: tokens were cut to fit
    labels: pa.Array             # (R,) string
    no_tokens: tuple[str, ...] = ()
    """Records whose text (or second text) produced no token (no rows), for the caller's
    ``no_tokens`` count; not carried by ``select``, ``to_arrow`` and ``from_arrow``."""

    @property
    def num_rows(self) -> int:
        return len(self.doc_ids)

    def select(self, rows: Sequence[int] | np.ndarray) -> TextRows:
        rows = np.asarray(rows, dtype=np.int64)
        tokens, offsets = _row_tokens(self.offsets, rows)
        return TextRows(
            doc_ids=tuple(self.doc_ids[r] for r in rows.tolist()), offsets=offsets, ids=self.ids[tokens],
            word_start=self.word_start[tokens], segment_b_start=self.segment_b_start[rows],
            truncated=self.truncated[rows], labels=self.labels.take(pa.array(rows, type=pa.int64())),
        )

    def to_arrow(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.doc_ids, type=pa.string()),
                list_array(self.ids, self.offsets, pa.uint32()),
                list_array(self.word_start, self.offsets, pa.bool_()),
                pa.array(self.segment_b_start.astype(np.int32), mask=self.segment_b_start < 0),
                pa.array(self.truncated, type=pa.bool_()),
                self.labels,
            ],
            names=["doc_id", "input_ids", "word_start", "segment_b_start", "truncated", "label"],
        )

    @classmethod
    def from_arrow(cls, data: pa.Table | pa.RecordBatch) -> TextRows:
        table = _as_table(data)
        offsets, ids = _flat(table.column("input_ids"))
        b_start = table.column("segment_b_start").combine_chunks()
        return cls(
            doc_ids=tuple(table.column("doc_id").to_pylist()), offsets=offsets,
            ids=ids.to_numpy().astype(np.uint32),
            word_start=_flat(table.column("word_start"))[1].to_numpy(zero_copy_only=False).astype(bool),
            segment_b_start=b_start.fill_null(-1).to_numpy().astype(np.int64),
            truncated=table.column("truncated").to_numpy().astype(bool),
            labels=table.column("label").combine_chunks(),
        )

    @classmethod
    def concat(cls, parts: Iterable[TextRows | pa.RecordBatch | pa.Table]) -> TextRows:
        """All rows of ``parts``, ordered by ``doc_id`` whatever order the parts arrived in."""
        return cls.from_arrow(_sorted_concat(parts, ["doc_id"]))


def encode_texts(
    tok: Tokenizer | TextEncoder,
    records: Sequence[LabelledText],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
) -> TextRows:
    """Tokenize texts (and pairs) in batched calls into ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]``.

    Too long, a single text is cut to ``max_seq_length - 2`` tokens; a pair is cut as HF
    ``tokenizers`` does for ``truncation="longest_first"``: with ``L = max_seq_length - 3``,
    the shorter text (A on a tie) keeps ``min(its length, L // 2)`` tokens and the longer gets
    the rest. E.g. A of 4 and B of 6 tokens into ``L = 5``: A keeps 2, B keeps 3. Tokens are
    cut from the end. Pass a ``TextEncoder`` built once (in ``DoFn.setup``) to reuse its
    WordPiece fast path; a plain ``Tokenizer`` is wrapped in one per call.
    """
    single, pair_budget = max_seq_length - 2, max_seq_length - 3
    if pair_budget < 1:
        raise ValueError(f"need max_seq_length >= 4, got {max_seq_length}")
    encoder = tok if isinstance(tok, TextEncoder) else TextEncoder(tok)
    a = encoder.encode([r.text for r in records])
    paired = np.fromiter((r.text_pair is not None for r in records), dtype=bool, count=len(records))
    b = encoder.encode([r.text_pair for r in records if r.text_pair is not None])
    len_a = np.diff(a.offsets)
    len_b = np.zeros(len(records), dtype=np.int64)
    b_start = np.zeros(len(records), dtype=np.int64)
    len_b[paired], b_start[paired] = np.diff(b.offsets), b.offsets[:-1] + len(a.ids)
    has_tokens = (len_a > 0) & (~paired | (len_b > 0))

    over = np.where(paired, len_a + len_b > pair_budget, len_a > single)
    a_shorter = len_a <= len_b
    short = np.minimum(np.minimum(len_a, len_b), pair_budget // 2)
    keep_a = np.where(paired, np.where(a_shorter, short, pair_budget - short), single)
    keep_b = np.where(a_shorter, pair_budget - short, short)
    keep_a = np.where(over, keep_a, len_a)[has_tokens]
    keep_b = np.where(over & paired, keep_b, len_b)[has_tokens]
    paired_kept = paired[has_tokens]
    r = len(keep_a)
    zeros, ones = np.zeros(r, np.int64), np.ones(r, np.int64)
    pieces = fixed_pieces(
        start=np.stack([zeros, a.offsets[:-1][has_tokens], zeros, b_start[has_tokens], zeros], axis=1),
        length=np.stack([ones, keep_a, ones, keep_b, paired_kept.astype(np.int64)], axis=1),
        const=np.tile(np.array([cls_id, -1, sep_id, -1, sep_id], dtype=np.int64), (r, 1)),
    )
    src, const, offsets = gather_index(pieces)
    ids = np.concatenate([a.ids, b.ids])
    word_start = np.concatenate([a.word_start, b.word_start])
    kept = np.flatnonzero(has_tokens)
    return TextRows(
        doc_ids=tuple(records[i].id for i in kept.tolist()),
        offsets=offsets,
        ids=take(ids, src, const),
        word_start=take(word_start, src, const, const_value=True),
        segment_b_start=np.where(paired_kept, keep_a + 2, -1),
        truncated=(keep_a < len_a[has_tokens]) | (keep_b < len_b[has_tokens]),
        labels=pa.array([records[i].label for i in kept.tolist()], type=pa.string()),
        no_tokens=tuple(records[i].id for i in np.flatnonzero(~has_tokens).tolist()),
    )


def text_table(
    rows: TextRows, vocabulary: Sequence[str], schema: pa.Schema
) -> tuple[pa.Table, tuple[str, ...], tuple[str, ...]]:
    """The shard table of ``rows`` with label ids from ``vocabulary``, in row order.

    Rows whose label is outside the vocabulary are left out. Returns the table and the ids of
    the records kept and of those dropped as ``unknown_label``. Columns are those of
    ``schema``, from: ``input_ids``, ``word_start``, ``segment_b_start`` (uint16, null without
    a pair) and ``label`` (int32).
    """
    label_col, unknown = label_ids(rows.labels, vocabulary, dtype=np.int32)
    keep, kept, dropped = _keep_documents(rows.doc_ids, unknown)
    tokens, offsets = _row_tokens(rows.offsets, keep)
    b_start = rows.segment_b_start[keep]
    id_type = schema.field("input_ids").type.value_type
    columns = {
        "input_ids": lambda: list_array(rows.ids[tokens], offsets, id_type),
        "word_start": lambda: list_array(rows.word_start[tokens], offsets, pa.bool_()),
        "segment_b_start": lambda: pa.array(b_start.astype(np.uint16), mask=b_start < 0, type=pa.uint16()),
        "label": lambda: pa.array(label_col[keep], type=pa.int32()),
    }
    return _table(columns, schema, "sequence_classification"), kept, dropped


# --------------------------------------------------------------------------------------------
# Helpers


def _row_tokens(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token indices of ``rows`` (in order) and the offsets of the selection."""
    lengths = np.diff(offsets)[rows]
    return ranges_index(offsets[:-1][rows], lengths), offsets_from_lengths(lengths)


def _keep_documents(doc_ids: tuple[str, ...], unknown: np.ndarray) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Rows to keep (no row of their document has an unknown label), documents kept and dropped."""
    encoded = pa.array(doc_ids, type=pa.string()).dictionary_encode()
    doc_of = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    bad = np.bincount(doc_of[unknown], minlength=len(names)) > 0
    keep = np.flatnonzero(~bad[doc_of])
    return keep, tuple(n for n, b in zip(names, bad.tolist()) if not b), tuple(n for n, b in zip(names, bad.tolist()) if b)


def _table(columns: dict[str, Callable[[], pa.Array]], schema: pa.Schema, task: str) -> pa.Table:
    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise ValueError(f"schema columns {missing} are not produced for {task}")
    return pa.Table.from_arrays([columns[f.name]() for f in schema], schema=schema)


def _as_table(data: pa.Table | pa.RecordBatch) -> pa.Table:
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    return table.combine_chunks()


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Row offsets (from 0) and flat values of a list column."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.flatten()


def _sorted_concat(parts: Iterable[object], keys: list[str]) -> pa.Table:
    tables = [_as_table(p.to_arrow() if isinstance(p, (TaggedRows, TextRows)) else p) for p in parts]  # type: ignore[arg-type]
    if not tables:
        raise ValueError("concat needs at least one part")
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))
