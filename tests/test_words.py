"""``batch_words`` (vectorised) finds exactly the words ``re.findall(r"\\w+", text.lower())`` finds,
with the same hashes as ``word_hash``, on real text and on every Unicode code point."""

from __future__ import annotations

import re
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.quality.words import batch_words, word_hash

from conftest import demo_documents


def reference(texts: list[str]) -> tuple[list[int], list[int], list[int]]:
    hashes, lengths, offsets = [], [], [0]
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        hashes += [word_hash(w) for w in words]
        lengths += [len(w) for w in words]
        offsets.append(offsets[-1] + len(words))
    return hashes, lengths, offsets


def check(texts: list[str]) -> None:
    got = batch_words(texts)
    hashes, lengths, offsets = reference(texts)
    assert got.offsets.tolist() == offsets
    assert got.lengths.tolist() == lengths
    assert got.hashes.tolist() == hashes


def test_the_demo_corpus_in_batches():
    docs = demo_documents(190)
    for i in range(0, len(docs), 37):
        check(docs[i:i + 37])


def test_every_code_point():
    points = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    # Each alone, and each between ASCII letters (does it join or split a word?).
    check([" ".join(points[i:i + 4096]) for i in range(0, len(points), 4096)])
    check(["a" + "a".join(points[i:i + 4096]) + "a" for i in range(0, len(points), 4096)])


def test_case_mappings_that_change_length_and_final_sigma():
    check(["İstanbul ΣΑΣ σας", "ŉ ǰ ﬃ ß", "", "x", "ǅemal Straße", "ΟΔΟΣ.ΟΔΟΣ", "_a_ __ 4.2-ish", "日本語 テキスト ²½Ⅷ"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=6))
def test_random_text(texts):
    check(texts)


def test_no_words():
    got = batch_words(["", "  ...  ", "!?"])
    assert got.offsets.tolist() == [0, 0, 0, 0] and len(got.hashes) == 0 and got.hashes.dtype == np.uint64
