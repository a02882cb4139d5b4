"""Document cleaning: hand-worked cases for every rule, and the shape every cleaned text has."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data.text.cleaning import clean_text

#: "mi-khaham" (I want): the ZWNJ keeps the prefix "mi" from joining the verb.
PERSIAN_ZWNJ = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
ENGLAND_FLAG = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Line breaks
        ("a\r\nb\rc\n", "a\nb\nc"),
        ("a\u2028b\u2029c", "a\nb\nc"),
        ("page one\fpage two\vthree\x85four\x1cfive", "page one\npage two\nthree\nfour\nfive"),
        # Normalisation (NFC is the default)
        ("Cafe\u0301", "Café"),
        ("\ufb01ne", "\ufb01ne"),
        ("\u212a", "K"),
        # Soft hyphen between letter and accent: deleted first, so the accent still composes.
        ("e\u00ad\u0301", "é"),
        # Invisible format characters go ...
        ("zero\u200bwidth", "zerowidth"),
        ("\ufeffBOM", "BOM"),
        ("co\u00adop", "coop"),
        ("a\u200eb\u202ec\u2066d\u2069e", "abcde"),
        ("word\u2060joiner", "wordjoiner"),
        ("tag\U000e0001", "tag"),
        # ... but those that change what the reader sees stay.
        ("\U0001f469\u200d\U0001f4bb", "\U0001f469\u200d\U0001f4bb"),
        (PERSIAN_ZWNJ, PERSIAN_ZWNJ),
        (ENGLAND_FLAG, ENGLAND_FLAG),
        ("\u0600\u0661\u0662", "\u0600\u0661\u0662"),
        # Controls: tab to space, others deleted, including DEL and C1.
        ("a\tb", "a b"),
        ("\x07bell\x00", "bell"),
        ("a\x7fb\x9fc", "abc"),
        # Lone surrogates cannot be written as UTF-8; U+FFFD and private use are real text.
        ("a\ud800b\udfffc", "abc"),
        ("bad \ufffd byte \ue000", "bad \ufffd byte \ue000"),
        # Lines: trailing whitespace and blank lines go, indentation and inner spacing stay.
        ("\n\na\n\n  \n\t\nb\n\n", "a\nb"),
        ("  indented  \nnext \u00a0", "  indented\nnext"),
        ("a   b\u00a0c", "a   b\u00a0c"),
        ("", ""),
        (" \n\t\r\n\u3000", ""),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "normalization", "expected"),
    [
        ("\ufb01ne", "NFKC", "fine"),
        ("x\u00b2 a\u00a0b", "NFKC", "x2 a b"),
        ("Cafe\u0301", "NFKC", "Café"),
        ("Cafe\u0301", "none", "Cafe\u0301"),
        ("\u212a", "none", "\u212a"),
    ],
)
def test_normalization_forms(raw: str, normalization: str, expected: str) -> None:
    assert clean_text(raw, normalization=normalization) == expected


def test_every_control_and_format_character_is_removed_unless_kept() -> None:
    every = "".join(
        chr(c)
        for c in range(0x110000)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs") and chr(c) not in "\n\t"
    )
    kept = [
        "\u0600", "\u0601", "\u0602", "\u0603", "\u0604", "\u0605", "\u06dd", "\u070f",
        "\u0890", "\u0891", "\u08e2", "\u200c", "\u200d", "\U000110bd", "\U000110cd",
        *(chr(c) for c in range(0xE0020, 0xE0080)),
    ]
    # The controls that are line breaks (\v \f \r \x1c-\x1e U+0085) all come first, among
    # the deleted ones: one line break after "<" is what remains of them.
    assert clean_text("<" + every + ">", normalization="none") == "<\n" + "".join(kept) + ">"


def test_keeping_control_chars_still_normalises_line_breaks() -> None:
    raw = "a\tb\x07c\u200bd\r\ne\ff  \n\n"
    assert clean_text(raw, remove_control_chars=False) == "a\tb\x07c\u200bd\ne\nf"


def test_unknown_normalization_is_rejected_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"one of 'NFC', 'NFKC', 'none', found 'NFD'"):
        clean_text("text", normalization="NFD")


def test_many_lines_only_some_needing_fixes() -> None:
    lines = [f"line {i}" + ("\u200b\t" if i % 3 == 0 else "") + " " for i in range(9)]
    assert clean_text("\r\n".join(lines)) == "\n".join(f"line {i}" for i in range(9))


# Characters chosen to hit every rule: line breaks, controls, format characters kept and
# deleted, whitespace kinds, combining marks and compatibility forms.
_ALPHABET = list(
    "ab \n\r\t\x00\x07\x0b\x0c\x1c\x7f\x85\x9f\u00a0\u00ad\u0301\u0600\u200b\u200c\u200d"
    "\u2028\u2029\u212a\u3000\ufb01\ufeff\ufffd\ue000\ud800\U000e0001\U000e0067é"
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.text(alphabet=_ALPHABET, max_size=40),
    normalization=st.sampled_from(["NFC", "NFKC", "none"]),
    remove=st.booleans(),
)
def test_cleaned_text_has_its_promised_shape(raw: str, normalization: str, remove: bool) -> None:
    out = clean_text(raw, normalization=normalization, remove_control_chars=remove)
    lines = out.split("\n")
    assert out.splitlines() == (lines if out else [])
    assert all(line and line == line.rstrip() for line in lines) or out == ""
    if normalization != "none":
        assert unicodedata.is_normalized(normalization, out)
    if remove:
        assert not any(
            unicodedata.category(c) in ("Cc", "Cs") and c != "\n"
            or c in "\u00ad\u200b\ufeff\U000e0001"
            for c in out
        )
    assert clean_text(out, normalization=normalization, remove_control_chars=remove) == out
