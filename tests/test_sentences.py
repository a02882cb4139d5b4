"""Sentence splitting: hand-worked cases for every rule, and that no text is ever lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.text.sentences import split_lines, split_sentences

CASES = [
    # Terminal punctuation, runs of it, and closing quotes or brackets after it.
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("Stop! Go?! Now...", ["Stop!", "Go?!", "Now..."]),
    ("One.   Two.", ["One.", "Two."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('"Really?" she asked.', ['"Really?" she asked.']),
    ("He won (barely). She lost.", ["He won (barely).", "She lost."]),
    ("Done. (See above.) Next.", ["Done.", "(See above.)", "Next."]),
    ("Sie sagte: «Ja.» Dann ging sie.", ["Sie sagte: «Ja.»", "Dann ging sie."]),
    ('He left. "Hi," she said.', ["He left.", '"Hi," she said.']),
    # What may start a sentence: capitals, digits, caseless letters; not lower case.
    ("The score was 3. 4 more came.", ["The score was 3.", "4 more came."]),
    ("Это кот. Он спит.", ["Это кот.", "Он спит."]),
    ("Это кот. он спит.", ["Это кот. он спит."]),
    ("Hello. שלום עולם.", ["Hello.", "שלום עולם."]),
    ("ეს არის. ის არის.", ["ეს არის.", "ის არის."]),
    ("كيف حالك؟ أنا بخير.", ["كيف حالك؟", "أنا بخير."]),
    ("यह एक वाक्य है। यह दूसरा है।", ["यह एक वाक्य है।", "यह दूसरा है।"]),
    ("Prices rose. $5 is a lot.", ["Prices rose. $5 is a lot."]),
    # Ellipses split only before a sentence start.
    ("Wait... what? Fine... Go on.", ["Wait... what?", "Fine...", "Go on."]),
    ("Well… Maybe. Well… maybe.", ["Well…", "Maybe.", "Well… maybe."]),
    # Abbreviations, any case or as written, and before numbers only.
    ("Mr. Smith met Dr. Jones and Prof. Brown. They talked.",
     ["Mr. Smith met Dr. Jones and Prof. Brown.", "They talked."]),
    ("MR. SMITH LEFT. HE CAME BACK.", ["MR. SMITH LEFT.", "HE CAME BACK."]),
    ("Apple vs. Microsoft was long. Smith et al. Showed it.",
     ["Apple vs. Microsoft was long.", "Smith et al. Showed it."]),
    ("See Fig. 3 and Eq. 4 on pp. 12-14. Done.", ["See Fig. 3 and Eq. 4 on pp. 12-14.", "Done."]),
    ("I ate a fig. Then I left.", ["I ate a fig.", "Then I left."]),
    ("It is No. 5 on the list.", ["It is No. 5 on the list."]),
    ('"No." He left.', ['"No."', "He left."]),
    ("She has a Ph.D. Students ask her.", ["She has a Ph.D. Students ask her."]),
    # "etc." ends a sentence before a capital, not before a lower-case word.
    ("Apples, pears, etc. The rest rotted.", ["Apples, pears, etc.", "The rest rotted."]),
    ("Apples, pears, etc. and plums.", ["Apples, pears, etc. and plums."]),
    # Initials and letters joined by periods.
    ("J. R. R. Tolkien wrote it. J.R.R. Tolkien did.",
     ["J. R. R. Tolkien wrote it.", "J.R.R. Tolkien did."]),
    ("Some fruit, e.g. Apples, are red. Yes.", ["Some fruit, e.g. Apples, are red.", "Yes."]),
    ("That one, i.e. The red one. Yes.", ["That one, i.e. The red one.", "Yes."]),
    ("The U.S. economy grew. It did.", ["The U.S. economy grew.", "It did."]),
    ("He moved to the U.S. In 1990 he returned.", ["He moved to the U.S. In 1990 he returned."]),
    ("We met at 5 p.m. Then we ate.", ["We met at 5 p.m. Then we ate."]),
    ("Choose option a. Then continue.", ["Choose option a.", "Then continue."]),
    # Numbers, versions, URLs and code have no space after their periods.
    ("Pi is 3.14 today. Use v2.0.1 now.", ["Pi is 3.14 today.", "Use v2.0.1 now."]),
    ("See https://example.com. Next page.", ["See https://example.com.", "Next page."]),
    ("os.path.join() returns a str. Use it.", ["os.path.join() returns a str.", "Use it."]),
    ("Hi there.Next one", ["Hi there.Next one"]),
    # CJK full stops split with no space, closing brackets stay with their sentence.
    ("今天很好。明天见！你呢？", ["今天很好。", "明天见！", "你呢？"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
    ("彼は「はい。」と言った。 次へ", ["彼は「はい。」", "と言った。", "次へ"]),
    # Every line break ends a sentence, whatever comes before it.
    ("First line without period\nSecond line. Third.",
     ["First line without period", "Second line.", "Third."]),
    ("Mr.\nSmith", ["Mr.", "Smith"]),
    ("  padded line  \n\n\tnext\u00a0", ["padded line", "next"]),
    ("", []),
    (" \n \n", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_all_cases_in_one_document_lose_nothing() -> None:
    text = " ".join(text for text, _ in CASES)
    sentences = split_sentences(text)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two.\nThree", ["One. Two.", "Three"]),
        ("  a  \n\n b\r\nc\u2028d", ["a", "b", "c", "d"]),
        ("", []),
        ("\n\n", []),
    ],
)
def test_split_lines_trusts_line_breaks_only(text: str, expected: list[str]) -> None:
    assert split_lines(text) == expected


# Letters of every kind the rules distinguish, every punctuation mark they look at, and every
# kind of whitespace, so that generated texts are dense in candidate boundaries.
_ALPHABET = list("aZé3中שი .!?…。！？؟।\"'“”)(«»」「\n\t\u00a0\u2028") + ["Mr", "e.g", "U.S", "etc"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=60).map("".join))
def test_no_text_is_lost_reordered_or_left_unstripped(text: str) -> None:
    sentences = split_sentences(text)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())
    assert all(s and s == s.strip() and len(s.splitlines()) == 1 for s in sentences)
    # Splitting sentences only ever refines the line split.
    lines = split_lines(text)
    assert len(sentences) >= len(lines)
