"""Sentence splitting of cleaned documents, by rules.

BERT's next-sentence pairs and RoBERTa's full-sentence packing need sentence boundaries, but
only roughly: a missed boundary merges two sentences into one segment, which costs little,
while a wrong one cuts a sentence in half. The rules below therefore split only where the
evidence is clear, and run at regex speed (one ``finditer`` per document, a set lookup per
candidate), because a statistical splitter would be the slowest stage of the pipeline.

Every function here only cuts the text and strips whitespace at the cuts: joining the
sentences gives back the document's non-whitespace characters, in order.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "cf", "viz", "approx",
        "al", "pp", "inc", "ltd", "corp", "ph.d", "dept", "est",
    }
)
"""Abbreviations whose period never ends a sentence, matched in any case ("Dr.", "DR.", "dr.").

None of them is also an ordinary word that could end a sentence. Single letters joined by
periods ("e.g.", "i.e.", "U.S.", "U.K.", "a.m.", "p.m.", "J.R.R.") are recognised by their
shape instead of being listed. "etc." is deliberately absent: it often ends a sentence, so it
splits like any word, that is only before a capital letter, a digit or an opening quote
("apples, etc. The" splits; "apples, etc. and pears" does not)."""

CASED_ABBREVIATIONS = frozenset(
    {
        "Fig", "Figs", "Vol", "Vols", "Eq", "Eqs", "Sec", "Ch", "Co",
        "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
        "Gen", "Col", "Capt", "Lt", "Sgt", "Rev", "Gov", "Sen", "Rep",
    }
)
"""Abbreviations that only count when capitalised as written, because their lower-case form
is an English word that can end a sentence ("I ate a fig. Then" splits; "see Fig. 3" does not).
"""

NUMBER_ABBREVIATIONS = frozenset({"No", "Nos", "no", "nos", "Nr"})
"""Abbreviations that only count before a number: "No. 5" does not split, but in
'"No." He left.' "No" is a whole sentence."""

# Sentence-final punctuation. Besides . ! ? and the ellipsis: the Arabic question mark and the
# Devanagari danda and double danda, which end sentences in Arabic, Hindi and related scripts.
_TERMINALS = ".!?…؟।॥"
_CLOSERS = "\"'”’)]»"
_OPENERS = "\"'“‘„«([{¿¡"
# CJK full stops end a sentence even with no space after them, as CJK text has none.
_CJK_TERMINALS = "。！？"
_CJK_CLOSERS = "」』）】〉》”’\"')]"

# A candidate is a run of terminals and its closing quotes or brackets. After a CJK full stop
# it always ends a sentence. After the others it needs spaces (not a line break: that ends the
# sentence anyway) and then a character that is not an ASCII lower-case letter; the rest of
# the rules are in ``_is_boundary``, and ruling out a-z here just saves a Python call for most
# non-starters. Both kinds begin with one character class, which lets the regex engine skip
# to the next candidate at C speed: an alternation at the top level would make it try every
# position, four to six times slower.
_BOUNDARY = re.compile(
    f"[{re.escape(_TERMINALS)}{_CJK_TERMINALS}]"
    f"(?:(?<=[{_CJK_TERMINALS}])[{_CJK_TERMINALS}]*[{re.escape(_CJK_CLOSERS)}]*"
    f"|(?P<more>[{re.escape(_TERMINALS)}]*)[{re.escape(_CLOSERS)}]*"
    f"(?=[^\\S\\n]+(?P<next>[^\\sa-z])))"
)
_DOTTED_INITIALS = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
# Longer than any abbreviation: a candidate needs at most this much of the text before it.
_WORD_WINDOW = 32


def _starts_sentence(char: str) -> bool:
    """Whether ``char`` may begin a sentence: not a lower-case letter, nor a symbol.

    Letters of scripts without case (CJK, Arabic, Hebrew, Devanagari, ...) qualify. Georgian
    is written in Mkhedruli, which Unicode files as lower case only because an upper-case
    Mtavruli exists for titles, so it qualifies too.
    """
    if char.isdigit() or char in _OPENERS:
        return True
    return char.isalpha() and (not char.islower() or "\u10d0" <= char <= "\u10ff")


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether a Latin-style candidate really ends a sentence (see ``split_sentences``)."""
    following = match.group("next")
    if not _starts_sentence(following):
        return False
    start = match.start()
    if match.group("more") or text[start] != ".":
        return True
    before = text[max(0, start - _WORD_WINDOW) : start]
    if not before or before[-1].isspace():
        return True
    word = before.rsplit(None, 1)[-1].lstrip(_OPENERS)
    if len(word) == _WORD_WINDOW:
        return True
    if word.lower() in ABBREVIATIONS or word in CASED_ABBREVIATIONS:
        return False
    if word in NUMBER_ABBREVIATIONS:
        return not following.isdigit()
    if len(word) == 1:
        # An initial, as in "J. R. R. Tolkien"; "World War I. The" is the price.
        return not word.isupper()
    return "." not in word or _DOTTED_INITIALS.fullmatch(word) is None


def split_lines(text: str) -> list[str]:
    """The document's non-empty lines, stripped: for corpora with one sentence per line."""
    return [stripped for line in text.splitlines() if (stripped := line.strip())]


def split_sentences(text: str) -> list[str]:
    """Split a cleaned document into stripped, non-empty sentences, in order.

    A line break always ends a sentence. Within a line a sentence ends:

    * after a run of ``. ! ? …`` (so also "?!" and "..."), optionally followed by closing
      quotes or brackets, when whitespace follows and then a character that can start a
      sentence: a capital letter, a digit, an opening quote or bracket, or a letter of a
      script without case;
    * after a run of CJK full stops ``。！？`` and their closing brackets, space or not.

    A period does not end a sentence after a word in ``ABBREVIATIONS`` or
    ``CASED_ABBREVIATIONS``, after one in ``NUMBER_ABBREVIATIONS`` when a number follows,
    after a single capital letter (an initial) or after single letters joined by periods
    ("e.g.", "U.S."). Periods inside "3.14", "v2.0.1", "example.com" or "os.path.join()" have
    no whitespace after them and are never candidates.

    >>> split_sentences('He said "Stop." Then he left. "Really?" she asked.\\n第一。第二')
    ['He said "Stop."', 'Then he left.', '"Really?" she asked.', '第一。', '第二']
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if match.group("next") is not None and not _is_boundary(text, match):
            continue
        chunk = text[start : match.end()]
        # A printable chunk has no line break in it (all line breaks are control or separator
        # characters) and cannot be blank, as it ends in punctuation: the common case, cheaply.
        if chunk.isprintable():
            sentences.append(chunk.strip())
        else:
            sentences += split_lines(chunk)
        start = match.end()
    sentences += split_lines(text[start:])
    return sentences
