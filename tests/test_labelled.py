"""Labelled rows: sub-token label alignment, windows with stride, label ids, truncation, tables."""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from mlm_data.config.preprocess import InputConfig
from mlm_data.dataset.schema import IGNORE_INDEX, schema_for
from mlm_data.errors import ConfigError
from mlm_data.instances.labelled_rows import example_ids, label_ids, order_labels
from mlm_data.instances.tagged_rows import TaggedRows, encode_tagged, tagged_table
from mlm_data.instances.text_rows import TextRows, encode_texts, text_table
from mlm_data.reading.input_files import list_input_files
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence, read_labelled
from mlm_data.text.tokenizer import TextEncoder, parse_tokenizer

from conftest import TOKENIZER

CLS, SEP = 1, 2
LABELED = Path("/work/shared/corpora/labeled")


def tiny_tokenizer(extra: dict[str, int] | None = None) -> Tokenizer:
    """WordPiece over the letters: word "ccc" is ``c ##c ##c``, so splits are certain."""
    vocab = {"[UNK]": 0, "[CLS]": CLS, "[SEP]": SEP, "[PAD]": 3}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab["##" + c] = len(vocab)
    for token in extra or {}:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, strip_accents=False,
                                                handle_chinese_chars=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


TINY = tiny_tokenizer({"new": 0, "york": 0, "##er": 0, "##s": 0, "love": 0, "it": 0})


def token_schema(vocab_size=2000):
    """The token-classification schema with ``example_id`` and ``window_index`` after ``labels``
    (added here until ``schema.py`` has them)."""
    schema = schema_for("token_classification", vocab_size=vocab_size)
    if "example_id" not in schema.names:
        at = schema.get_field_index("labels") + 1
        schema = schema.insert(at, pa.field("example_id", pa.uint64(), nullable=False))
        schema = schema.insert(at + 1, pa.field("window_index", pa.uint16(), nullable=False))
    return schema


def row_lists(rows):
    """Per row: (tokens as strings, labels, word starts) — for the tiny tokenizer."""
    out = []
    labels = rows.labels.to_pylist()
    for r in range(rows.num_rows):
        a, b = rows.offsets[r], rows.offsets[r + 1]
        out.append((rows.ids[a:b].tolist(), labels[a:b], rows.word_start[a:b].tolist()))
    return out


# --------------------------------------------------------------------------------------------
# Label vocabulary and ids


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["I-PER", "O", "B-PER", "B-LOC", "O"], ["O", "B-LOC", "B-PER", "I-PER"]),
        (["pos", "neg", "neutral"], ["neg", "neutral", "pos"]),
        (["10", "2", "0", "1"], ["0", "1", "2", "10"]),
        (["-1", "1", "0"], ["-1", "0", "1"]),
        (["01", "2"], ["01", "2"]),        # "01" is not written plainly: string order
        (["O", "0"], ["O", "0"]),
        (["Z", "a", "É"], ["Z", "a", "É"]),  # code point order
        ([], []),
    ],
)
def test_order_labels(labels, expected):
    assert order_labels(labels) == expected
    assert order_labels(reversed(labels)) == expected


def test_label_ids_and_unknown_labels():
    ids, unknown = label_ids(pa.array(["B-X", None, "O", "C", None, "O"]), ["O", "B-X"],
                             offsets=np.array([0, 2, 4, 6]))
    assert ids.dtype == np.int16 and ids.tolist() == [1, IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, 0]
    assert unknown.tolist() == [False, True, False]
    ids, unknown = label_ids(["b", "zz"], ["a", "b"], dtype=np.int32)
    assert ids.dtype == np.int32 and ids.tolist() == [1, IGNORE_INDEX] and unknown.tolist() == [False, True]
    assert label_ids(pa.array([], pa.string()), [])[0].tolist() == []


def test_label_vocabulary_must_fit_the_id_type():
    with pytest.raises(ConfigError, match="40000 labels do not fit the schema's int16 label ids"):
        label_ids(["x"], [str(i) for i in range(40000)])


# --------------------------------------------------------------------------------------------
# Token classification: alignment worked out by hand


def test_alignment_with_the_test_tokenizer():
    tok = parse_tokenizer(TOKENIZER.read_text(), source="test")
    words = ["Guido", "Rossum", "Python", "in", "Amsterdam"]
    pieces = [tok.encode(w, add_special_tokens=False).tokens for w in words]
    assert pieces == [["gu", "##id", "##o"], ["ro", "##ss", "##um"], ["python"], ["in"],
                      ["a", "##m", "##st", "##er", "##d", "##am"]]
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    sentence = TaggedSentence("s#0", tuple(words), ("B-PER", "I-PER", "B-MISC", "O", "B-LOC"))

    first = encode_tagged(tok, [sentence], max_seq_length=32, cls_id=cls_id, sep_id=sep_id, stride=4,
                          label_all_subtokens=False)
    (ids, labels, word_start), = row_lists(first)
    assert [tok.id_to_token(i) for i in ids] == ["[CLS]", *[p for ps in pieces for p in ps], "[SEP]"]
    assert labels == [None, "B-PER", None, None, "I-PER", None, None, "B-MISC", "O", "B-LOC", *[None] * 5, None]
    assert word_start == [True, True, False, False, True, False, False, True, True, True, *[False] * 5, True]

    every = encode_tagged(tok, [sentence], max_seq_length=32, cls_id=cls_id, sep_id=sep_id, stride=4,
                          label_all_subtokens=True)
    assert row_lists(every)[0][1] == [None, *["B-PER"] * 3, *["I-PER"] * 3, "B-MISC", "O", *["B-LOC"] * 6, None]


def test_alignment_with_a_tiny_vocabulary():
    sentence = TaggedSentence("t#0", ("New", "Yorkers", "love", "it"), ("B-MISC", "I-MISC", "O", "O"))
    rows = encode_tagged(TINY, [sentence], max_seq_length=16, cls_id=CLS, sep_id=SEP, stride=2,
                         label_all_subtokens=False)
    (ids, labels, word_start), = row_lists(rows)
    assert [TINY.id_to_token(i) for i in ids] == ["[CLS]", "new", "york", "##er", "##s", "love", "it", "[SEP]"]
    assert labels == [None, "B-MISC", "I-MISC", None, None, "O", "O", None]
    assert word_start == [True, True, True, False, False, True, True, True]
    rows = encode_tagged(TINY, [sentence], max_seq_length=16, cls_id=CLS, sep_id=SEP, stride=2,
                         label_all_subtokens=True)
    assert row_lists(rows)[0][1] == [None, "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O", "O", None]


def letters(lengths):
    """Words of the given token counts under ``TINY``, adjacent words with different letters;
    a length of 0 is a lone control character, which produces no token."""
    return tuple("\u0007" if n == 0 else string.ascii_lowercase[i % 26] * n for i, n in enumerate(lengths))


def test_windows_with_stride_by_hand():
    # Words of 2, 3, 1 and 2 tokens; 4 tokens per window; up to 2 tokens of context.
    sentence = TaggedSentence("w#0", letters([2, 3, 1, 2]), ("A", "B", "C", "D"))
    rows = encode_tagged(TINY, [sentence], max_seq_length=6, cls_id=CLS, sep_id=SEP, stride=2,
                         label_all_subtokens=False)
    got = [([TINY.id_to_token(i) for i in ids], labels) for ids, labels, _ in row_lists(rows)]
    assert got == [
        (["[CLS]", "a", "##a", "[SEP]"], [None, "A", None, None]),
        # the context would be "a ##a" (2 tokens), but then "b ##b ##b" no longer fits: no context
        (["[CLS]", "b", "##b", "##b", "c", "[SEP]"], [None, "B", None, None, "C", None]),
        (["[CLS]", "c", "d", "##d", "[SEP]"], [None, None, "D", None, None]),  # "c": context
    ]
    assert rows.doc_ids == ("w#0",) * 3 and rows.window_index.tolist() == [0, 1, 2]
    assert rows.truncated_words == 0 and rows.words_without_tokens == 0


def test_a_word_longer_than_a_window_is_cut_and_counted():
    sentence = TaggedSentence("w#0", letters([1, 6, 1]), ("A", "B", "C"))
    for label_all in (False, True):
        rows = encode_tagged(TINY, [sentence], max_seq_length=6, cls_id=CLS, sep_id=SEP, stride=2,
                             label_all_subtokens=label_all)
        got = [([TINY.id_to_token(i) for i in ids], labels) for ids, labels, _ in row_lists(rows)]
        b_labels = ["B"] * 4 if label_all else ["B", None, None, None]
        assert got == [
            (["[CLS]", "a", "[SEP]"], [None, "A", None]),
            (["[CLS]", "b", "##b", "##b", "##b", "[SEP]"], [None, *b_labels, None]),
            (["[CLS]", "c", "[SEP]"], [None, "C", None]),
        ]
        assert rows.truncated_words == 1


def test_words_and_sentences_without_tokens():
    sentences = [
        TaggedSentence("z#0", ("\u0007", "ok", "\u200b"), ("A", "B", "C")),
        TaggedSentence("z#1", ("\u0007",), ("A",)),
        TaggedSentence("z#2", ("\u0007", "bbbbbb"), ("A", "B")),  # no empty window before the cut word
    ]
    rows = encode_tagged(TINY, sentences, max_seq_length=6, cls_id=CLS, sep_id=SEP, stride=2,
                         label_all_subtokens=False)
    assert rows.no_tokens == ("z#1",) and rows.words_without_tokens == 4 and rows.truncated_words == 1
    assert rows.doc_ids == ("z#0", "z#2")
    assert [labels for _, labels, _ in row_lists(rows)] == [[None, "B", None, None], [None, "B", None, None, None, None]]


@st.composite
def tagged_batches(draw):
    sentences = []
    for k in range(draw(st.integers(1, 3))):
        lengths = draw(st.lists(st.integers(0, 9), min_size=1, max_size=25))
        sentences.append(TaggedSentence(f"p#{k}", letters(lengths), tuple(f"T{i}" for i in range(len(lengths)))))
    return sentences, draw(st.integers(3, 16)), draw(st.integers(0, 16)), draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(tagged_batches())
def test_every_word_is_labelled_in_exactly_one_window(batch):
    sentences, max_len, stride, label_all = batch
    budget = max_len - 2
    rows = encode_tagged(TINY, sentences, max_seq_length=max_len, cls_id=CLS, sep_id=SEP, stride=stride,
                         label_all_subtokens=label_all)
    continuation = {i for t, i in TINY.get_vocab().items() if t.startswith("##")}
    by_sentence: dict[str, list] = {}
    for r, (ids, labels, word_start) in enumerate(row_lists(rows)):
        assert len(ids) <= max_len and ids[0] == CLS and ids[-1] == SEP
        assert word_start == [i in (CLS, SEP) or i not in continuation for i in ids]
        scored = [p for p, label in enumerate(labels) if label is not None]
        assert scored, "every window labels something"
        start = scored[0]
        assert start - 1 <= stride and word_start[start] and (start == 1 or word_start[1])
        seen = by_sentence.setdefault(rows.doc_ids[r], [[], [], []])  # content ids, labels, windows
        context = ids[1:start]
        assert not context or seen[0][-len(context):] == context, "context repeats the previous words"
        seen[0].extend(ids[start:-1])
        seen[1].extend(labels[p] for p in scored)
        seen[2].append(int(rows.window_index[r]))
    for s in sentences:
        lengths = [len(TINY.encode(w, add_special_tokens=False).ids) for w in s.words]
        if not any(lengths):
            assert s.id in rows.no_tokens and s.id not in by_sentence
            continue
        content, got_labels, windows = by_sentence[s.id]
        kept = [min(n, budget) for n in lengths]
        expected = [t for t, n in zip(s.tags, kept) for _ in range(n if label_all else min(n, 1))]
        assert got_labels == expected
        assert len(content) == sum(kept) and windows == list(range(len(windows)))
    assert rows.truncated_words == sum(n > budget for s in sentences for n in map(len, s.words) if n)
    assert rows.words_without_tokens == sum(w == "\u0007" for s in sentences for w in s.words)


# --------------------------------------------------------------------------------------------
# Token classification: tables


def test_unknown_labels_drop_whole_sentences():
    sentences = [
        TaggedSentence("u#0", letters([3, 3, 3]), ("O", "B-X", "O")),
        TaggedSentence("u#1", letters([3, 3, 3]), ("O", "O", "B-NEW")),  # unknown tag, in its 2nd window
        TaggedSentence("u#2", letters([1]), ("O",)),
    ]
    rows = encode_tagged(TINY, sentences, max_seq_length=8, cls_id=CLS, sep_id=SEP, stride=3,
                         label_all_subtokens=False)
    assert rows.doc_ids == ("u#0", "u#0", "u#1", "u#1", "u#2")
    table, kept, dropped = tagged_table(rows, ["O", "B-X"], token_schema())
    assert kept == ("u#0", "u#2") and dropped == ("u#1",)
    assert table.schema == token_schema()
    assert table.column("labels").to_pylist() == [
        [-100, 0, -100, -100, 1, -100, -100, -100],
        [-100, -100, -100, -100, 0, -100, -100, -100],
        [-100, 0, -100],
    ]
    assert table.column("window_index").to_pylist() == [0, 1, 0]
    u0 = int.from_bytes(hashlib.blake2b(b"u#0", digest_size=8).digest(), "little")
    assert table.column("example_id").to_pylist()[:2] == [u0, u0] == example_ids(["u#0"]).tolist() * 2
    assert table.column("input_ids").to_pylist()[2] == [CLS, TINY.token_to_id("a"), SEP]
    assert table.column("word_start").to_pylist()[2] == [True, True, True]


def test_tagged_rows_round_trip_and_concat_ignores_arrival_order():
    sentences = [TaggedSentence(f"r#{k}", letters([2, 4, 1, 3]), ("A", "B", "C", "D")) for k in range(3)]
    rows = encode_tagged(TINY, sentences, max_seq_length=6, cls_id=CLS, sep_id=SEP, stride=1,
                         label_all_subtokens=False)
    back = TaggedRows.from_arrow(rows.to_arrow())
    assert row_lists(back) == row_lists(rows) and back.doc_ids == rows.doc_ids
    assert back.window_index.tolist() == rows.window_index.tolist()
    n = rows.num_rows
    shuffled = [rows.select(np.arange(n)[n // 2:][::-1]), rows.select(np.arange(n)[: n // 2][::-1]).to_arrow()]
    merged = TaggedRows.concat(shuffled)
    assert row_lists(merged) == row_lists(rows) and merged.doc_ids == rows.doc_ids
    empty = TaggedRows.from_arrow(rows.select([]).to_arrow())
    assert empty.num_rows == 0 and tagged_table(empty, ["A"], token_schema())[0].num_rows == 0


# --------------------------------------------------------------------------------------------
# Sequence classification


def a_text(n, letter="a"):
    return " ".join([letter] * n)  # n one-token words under TINY


@pytest.mark.parametrize(
    ("len_a", "len_b", "max_len", "kept"),
    [
        (4, 6, 8, (2, 3)),    # L = 5: A is shorter, keeps min(4, 5 // 2) = 2; B gets 3
        (6, 4, 8, (3, 2)),
        (5, 5, 8, (2, 3)),    # a tie counts A as the shorter
        (3, 100, 13, (3, 7)),  # the short text is kept whole
        (2, 3, 13, (2, 3)),    # fits: nothing cut
    ],
)
def test_pair_truncation_longest_first(len_a, len_b, max_len, kept):
    record = LabelledText("x#0", a_text(len_a), a_text(len_b, "b"), "1")
    rows = encode_texts(TINY, [record], max_seq_length=max_len, cls_id=CLS, sep_id=SEP)
    a_id, b_id = TINY.token_to_id("a"), TINY.token_to_id("b")
    assert rows.ids.tolist() == [CLS, *[a_id] * kept[0], SEP, *[b_id] * kept[1], SEP]
    assert rows.segment_b_start.tolist() == [kept[0] + 2]
    assert rows.truncated.tolist() == [kept != (len_a, len_b)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(4, 40))
def test_pair_truncation_matches_hf_tokenizers(len_a, len_b, max_len):
    hf = tiny_tokenizer()
    hf.enable_truncation(max_length=max_len - 3, strategy="longest_first")
    enc = hf.encode(a_text(len_a), a_text(len_b, "b"), add_special_tokens=False)
    expected = (enc.type_ids.count(0), enc.type_ids.count(1))
    rows = encode_texts(TINY, [LabelledText("x#0", a_text(len_a), a_text(len_b, "b"), "1")],
                        max_seq_length=max_len, cls_id=CLS, sep_id=SEP)
    b_start = int(rows.segment_b_start[0])
    assert (b_start - 2, len(rows.ids) - b_start - 1) == expected


def test_single_texts_word_starts_and_tables():
    records = [
        LabelledText("s#0", "new yorkers love it", None, "pos"),
        LabelledText("s#1", "\u0007", None, "neg"),          # no tokens
        LabelledText("s#2", a_text(10), None, "neg"),         # cut to 6 - 2 = 4
        LabelledText("s#3", "it", "love it", "other"),        # label outside the vocabulary
        LabelledText("s#4", "it", "new", "pos"),
    ]
    rows = encode_texts(TextEncoder(TINY), records, max_seq_length=6, cls_id=CLS, sep_id=SEP)
    assert rows.no_tokens == ("s#1",) and rows.doc_ids == ("s#0", "s#2", "s#3", "s#4")
    tokens = [[TINY.id_to_token(i) for i in rows.ids[a:b]] for a, b in zip(rows.offsets[:-1], rows.offsets[1:])]
    assert tokens[0] == ["[CLS]", "new", "york", "##er", "##s", "[SEP]"]
    assert rows.word_start[: rows.offsets[1]].tolist() == [True, True, True, False, False, True]
    assert rows.truncated.tolist() == [True, True, False, False]
    assert rows.segment_b_start.tolist() == [-1, -1, 3, 3]

    schema = schema_for("sequence_classification", vocab_size=100)
    table, kept, dropped = text_table(rows, ["neg", "pos"], schema)
    assert table.schema == schema and kept == ("s#0", "s#2", "s#4") and dropped == ("s#3",)
    assert table.column("label").to_pylist() == [1, 0, 1]
    assert table.column("segment_b_start").to_pylist() == [None, None, 3]
    assert table.column("input_ids").to_pylist()[2] == [CLS, TINY.token_to_id("it"), SEP, TINY.token_to_id("new"), SEP]

    back = TextRows.concat([rows.select([3, 2]).to_arrow(), rows.select([1, 0])])
    assert back.doc_ids == rows.doc_ids and back.ids.tolist() == rows.ids.tolist()
    assert back.segment_b_start.tolist() == rows.segment_b_start.tolist()
    assert back.labels.to_pylist() == rows.labels.to_pylist()


# --------------------------------------------------------------------------------------------
# The real corpus (present on development machines and CI, never required)


@pytest.mark.skipif(not (LABELED / "ner_twitter_train.conll").exists(), reason="shared corpus not present")
def test_real_twitter_ner_every_word_labelled_once():
    (file,) = list_input_files([str(LABELED / "ner_twitter_train.conll")])
    sentences = list(read_labelled(file, InputConfig(), task="token_classification", max_document_chars=10**6))
    tok = parse_tokenizer(TOKENIZER.read_text(), source="test")
    rows = encode_tagged(tok, sentences, max_seq_length=32, cls_id=tok.token_to_id("[CLS]"),
                         sep_id=tok.token_to_id("[SEP]"), stride=8, label_all_subtokens=False)
    labels = rows.labels.to_pylist()
    seen: dict[str, list[str]] = {}
    for r, doc in enumerate(rows.doc_ids):
        seen.setdefault(doc, []).extend(x for x in labels[rows.offsets[r]:rows.offsets[r + 1]] if x is not None)
    assert all(seen[s.id] == list(s.tags) for s in sentences)
    vocabulary = order_labels({t for s in sentences for t in s.tags})
    table, kept, dropped = tagged_table(rows, vocabulary, token_schema())
    assert len(kept) == 1921 and not dropped and table.num_rows == rows.num_rows > 1921
    assert max(map(len, table.column("input_ids").to_pylist())) <= 32
