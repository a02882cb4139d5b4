"""Entity-level P/R/F1 (seqeval semantics), token accuracy and macro-F1, against hand-worked
cases, and the vectorised chunker and scores against seqeval itself on any tag sequences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

from trainer.evaluation.label_metrics import TagTable, chunks, entity_scores, label_scores, majority

LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-geo-loc", "I-geo-loc"]
ID = {name: i for i, name in enumerate(LABELS)}


def ids(*tags: str) -> list[int]:
    return [ID[t] for t in tags]


def entities(*sentences: list[str]) -> list[tuple[str, int, int]]:
    """``chunks`` as (type, start, end) with positions counted across the sentences."""
    flat = np.array([ID[t] for s in sentences for t in s], dtype=np.int64)
    offsets = np.cumsum([0, *(len(s) for s in sentences)])
    table = TagTable.of(LABELS)
    return [(table.types[t], a, b) for t, a, b in chunks(flat, offsets, table).tolist()]


@pytest.mark.parametrize(("tags", "expected"), [
    # BIO / IOB2
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),                  # B always starts a new one
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),                       # IOB1: I after O starts
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),         # I of another type starts
    (["I-PER"], [("PER", 0, 0)]),                                          # at the very start too
    (["B-geo-loc", "I-geo-loc"], [("geo-loc", 0, 1)]),                     # types with dashes
    # IOBES
    (["S-PER", "B-LOC", "E-LOC", "O"], [("PER", 0, 0), ("LOC", 1, 2)]),
    (["B-PER", "E-PER", "I-PER"], [("PER", 0, 1), ("PER", 2, 2)]),          # E closes; I after E starts
    (["B-PER", "I-PER", "E-PER", "E-PER"], [("PER", 0, 2), ("PER", 3, 3)]),
    (["S-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 1)]),
    (["O", "O"], []),
])
def test_chunks_by_hand(tags, expected):
    assert entities(tags) == expected


def test_sentences_never_share_an_entity():
    assert entities(["O", "B-PER"], ["I-PER", "O"]) == [("PER", 1, 1), ("PER", 2, 2)]
    assert entities([], ["B-LOC"], []) == [("LOC", 0, 0)]


def score(gold: list[list[str]], pred: list[list[str]]) -> dict:
    offsets = np.cumsum([0, *(len(s) for s in gold)])
    flat = lambda sents: np.array([ID[t] for s in sents for t in s], dtype=np.int64)  # noqa: E731
    return entity_scores(flat(gold), flat(pred), offsets, LABELS)


@pytest.mark.parametrize(("pred", "p", "r", "f"), [
    # gold: (PER 0-1), (LOC 3), (LOC 5-6)
    ([["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]], 1.0, 1.0, 1.0),
    # boundary error: PER cut to one word; the rest right -> 2 of 3 predicted, 2 of 3 found
    ([["B-PER", "O", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]], 2 / 3, 2 / 3, 2 / 3),
    # boundary error the other way (PER runs on into an O word) and a type error (LOC as PER)
    ([["B-PER", "I-PER", "I-PER", "B-PER"], ["O", "B-LOC", "I-LOC"]], 1 / 3, 1 / 3, 1 / 3),
    # one extra entity, nothing missed: precision 3/4, recall 1, F1 = 2*.75/(1.75) = 6/7
    ([["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "B-LOC", "I-LOC"]], 3 / 4, 1.0, 6 / 7),
    # nothing predicted: every ratio with nothing to count is 0
    ([["O", "O", "O", "O"], ["O", "O", "O"]], 0.0, 0.0, 0.0),
])
def test_entity_precision_recall_f1_by_hand(pred, p, r, f):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    s = score(gold, pred)
    assert (s["entity_precision"], s["entity_recall"], s["entity_f1"]) == pytest.approx((p, r, f))
    assert s["entities"] == 3


def test_token_accuracy_and_per_type_figures():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-LOC", "O"]]
    s = score(gold, pred)
    assert s["token_accuracy"] == pytest.approx(5 / 7)  # words 3 and 6 wrong
    # PER: predicted 2 (one right), gold 1; LOC: predicted (LOC 5-5) wrong boundary, gold 2.
    assert s["per_type"] == {"PER": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
                             "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}}
    assert s["entity_precision"] == pytest.approx(1 / 3) and s["entity_recall"] == pytest.approx(1 / 3)


def test_label_scores_by_hand():
    # gold a a b c c, pred a b b c a: a P 1/2 R 1/2, b P 1/2 R 1, c P 1 R 1/2 -> F1 1/2, 2/3, 2/3
    s = label_scores(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), ["a", "b", "c", "unused"])
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)  # "unused" is in neither: not averaged
    assert set(s["per_label"]) == {"a", "b", "c"} and s["per_label"]["c"]["support"] == 2
    assert majority(np.array([2, 1, 2, 1]), 3) == 1 and majority(np.array([], dtype=np.int64), 3) == 0


# ---- the vectorised chunker and the scores are seqeval's (default mode), checked against seqeval


tag_sentences = st.lists(st.lists(st.sampled_from(LABELS), max_size=8), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(tag_sentences)
def test_chunks_equal_seqeval_on_any_tags(sentences):
    starts = np.cumsum([0, *map(len, sentences)])
    positions = []  # the flat position of each seqeval index; -1 for the "O" it puts between sentences
    for k, s in enumerate(sentences):
        positions += [int(starts[k]) + p for p in range(len(s))] + [-1]
    expected = sorted((typ, positions[a], positions[b]) for typ, a, b in get_entities(sentences))
    assert sorted(entities(*sentences)) == expected


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_scores_equal_seqeval_on_any_tags(data):
    gold = data.draw(tag_sentences)
    pred = [data.draw(st.lists(st.sampled_from(LABELS), min_size=len(s), max_size=len(s))) for s in gold]
    ours = score(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns where a ratio has nothing to count (0 both ways)
        p, r, f, _ = precision_recall_fscore_support(gold, pred, average="micro")
        per_type = precision_recall_fscore_support(gold, pred, average=None)
    assert (ours["entity_precision"], ours["entity_recall"], ours["entity_f1"]) == pytest.approx((p, r, f))
    types = sorted({t for t, _, _ in get_entities(gold)} | {t for t, _, _ in get_entities(pred)})
    assert {t: (v["precision"], v["recall"], v["f1"], v["support"]) for t, v in ours["per_type"].items()} == {
        t: pytest.approx((float(pt), float(rt), float(ft), int(nt))) for t, pt, rt, ft, nt in zip(types, *per_type)}
