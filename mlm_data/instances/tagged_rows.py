"""Token classification rows: word tags aligned to sub-tokens, long sentences in windows.

Tags are aligned the usual way (HF ``run_ner``): the tag on a word's first sub-token and -100 on
the rest, or on every sub-token with ``label_all_subtokens``. A sentence longer than a row
becomes several *windows*, cut on word boundaries; each window after the first repeats up to
``stride`` tokens of whole words from the previous one as unlabelled context, so every word is
labelled in exactly one window and an evaluator can stitch a sentence back together from
``(example_id, window_index)``. The two stages are described in ``instances.labelled_rows``.
"""


from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from mlm_data.dataset.shards import list_array
from mlm_data.instances.labelled_rows import (
    as_table,
    example_ids,
    flat_list,
    keep_documents,
    label_ids,
    row_tokens,
    schema_table,
    sorted_concat,
)
from mlm_data.instances.rows import (
    fixed_pieces,
    gather_index,
    offsets_from_lengths,
    take,
)
from mlm_data.reading.labelled_reader import TaggedSentence


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
        tokens, offsets = row_tokens(self.offsets, rows)
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
        table = as_table(data)
        offsets, ids = flat_list(table.column("input_ids"))
        return cls(
            doc_ids=tuple(table.column("doc_id").to_pylist()),
            window_index=table.column("window_index").to_numpy().astype(np.int64),
            offsets=offsets, ids=ids.to_numpy().astype(np.uint32),
            word_start=flat_list(table.column("word_start"))[1].to_numpy(zero_copy_only=False).astype(bool),
            labels=flat_list(table.column("labels"))[1],
        )

    @classmethod
    def concat(cls, parts: Iterable[TaggedRows | pa.RecordBatch | pa.Table]) -> TaggedRows:
        """All rows of ``parts``, ordered by ``(doc_id, window_index)``: the result does not
        depend on the order the parts arrived in."""
        return cls.from_arrow(sorted_concat(parts, ["doc_id", "window_index"]))


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
    keep, kept, dropped = keep_documents(rows.doc_ids, unknown)
    tokens, offsets = row_tokens(rows.offsets, keep)
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
    return schema_table(columns, schema, "token_classification"), kept, dropped


