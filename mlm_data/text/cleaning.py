"""Document cleaning: one canonical form of a document before anything else looks at it.

After ``clean_text`` a document has "\\n" as its only line break, no invisible control or
format characters and no blank or whitespace-padded lines. Two copies of a text that differ
only in CRLF line ends, a byte-order mark or stray zero-width spaces therefore clean to the
same string (so exact de-duplication catches them), and the sentence splitter can treat every
"\\n" as a paragraph boundary.
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZATIONS = ("NFC", "NFKC", "none")
"""The accepted values of ``clean_text(normalization=...)``."""

# Besides "\r", everything ``str.splitlines`` treats as a line boundary becomes "\n", so the
# lines of a cleaned document are exactly its "\n"-separated parts. Form feed, vertical tab, NEL
# and the information separators are breaks, not noise: deleting them would glue the words on
# either side together ("end of page\fNext" must not become "end of pageNext").
_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_BREAK = re.compile(f"[{_LINE_BREAKS}]")

# Format characters (category Cf) that carry meaning and so survive cleaning:
# ZWNJ/ZWJ choose letter forms in Persian and Indic scripts and glue emoji sequences
# (woman + ZWJ + laptop is one glyph); tag characters spell subdivision flags such as
# England's; prepended concatenation marks (Arabic number sign, end of ayah, ...) are
# visible signs drawn over the digits that follow them.
_KEPT_FORMAT = frozenset(
    [0x200C, 0x200D, *range(0xE0020, 0xE0080)]
    + [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD]
)

# Unicode (up to 15.1 at least) assigns Cc only below U+00A0 and Cf only in the BMP, plane 1
# and the start of plane 14; scanning those takes about 35 ms, once per process.
_SCANNED = (range(0x20000), range(0xE0000, 0xE1000))


def _removable() -> str:
    """The body of a regex character class matching what ``remove_control_chars`` deletes.

    Read from the Unicode database rather than written out, so that it agrees with the
    ``unicodedata`` (and so the normalisation) of the running Python.
    """
    kept = {ord(c) for c in "\t\n\r" + _LINE_BREAKS} | _KEPT_FORMAT
    ranges: list[list[int]] = []
    for span in _SCANNED:
        for c in span:
            if c in kept or unicodedata.category(chr(c)) not in ("Cc", "Cf"):
                continue
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    # Surrogate code points (U+D800..U+DFFF) are never text in a Python str: they come from
    # ``surrogateescape`` decoding or JSON's "\ud800" escapes, and cannot be encoded as UTF-8,
    # so leaving one in would make the shard writer fail.
    ranges.append([0xD800, 0xDFFF])
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


# One class, one scan per line: line breaks map to "\n", everything else it matches to "".
_BREAK_OR_REMOVABLE = re.compile(f"[{_LINE_BREAKS}{_removable()}]")


def _break_or_nothing(match: re.Match[str]) -> str:
    return "\n" if match.group() in _LINE_BREAKS else ""


def _fix_lines(lines: list[str], remove_control_chars: bool) -> list[str]:
    """Map line breaks and delete removable characters, touching only the lines that need it.

    ``str.isprintable`` is False for every character these steps change (all are in Unicode's
    "Other" and "Separator" categories) and runs at C speed, so the regex, about ten times
    slower per character, only sees the rare lines that hold one. A no-break space is also
    "not printable" but needs nothing done; it is common enough in web text to test for first.
    """
    fixed: list[str] = []
    for line in lines:
        if line.isprintable():
            fixed.append(line)
            continue
        if remove_control_chars:
            line = line.replace("\t", " ")
            if not line.replace("\xa0", " ").isprintable():
                line = _BREAK_OR_REMOVABLE.sub(_break_or_nothing, line)
        else:
            line = _LINE_BREAK.sub("\n", line)
        if "\n" in line:
            fixed.extend(line.split("\n"))
        else:
            fixed.append(line)
    return fixed


def clean_text(text: str, *, normalization: str = "NFC", remove_control_chars: bool = True) -> str:
    """Return ``text`` as non-empty, right-stripped lines joined by "\\n".

    Steps, in order:

    1. Line breaks: "\\r\\n", lone "\\r", U+2028, U+2029 and every other character that
       ``str.splitlines`` breaks on (\\v, \\f, \\x1c-\\x1e, U+0085) become "\\n". Always done.
    2. With ``remove_control_chars`` (the default): tabs become one space; control characters
       (category Cc) are deleted; invisible format characters (category Cf: zero-width space,
       soft hyphen, byte-order mark, bidi marks and isolates, word joiner, ...) are deleted,
       except ZWNJ U+200C, ZWJ U+200D, emoji tag characters and the visible prepended
       concatenation marks, which change what the reader sees; lone surrogate code points are
       deleted because they cannot be written as UTF-8. Private-use characters and U+FFFD
       are kept: they are real characters a tokenizer may know.
    3. Trailing whitespace is stripped from every line and lines left empty are dropped.
       Leading indentation and whitespace inside a line are kept: tokenizers handle them.
    4. Unicode normalisation (``"NFC"``, ``"NFKC"`` or ``"none"``), after the deletions so that
       a soft hyphen between a letter and its combining accent does not block composition.
       Neither form turns a non-space character into trailing whitespace or creates a line
       break or a removable character, so the result needs no second pass.

    The result is a fixed point: cleaning it again with the same arguments returns it.

    >>> clean_text("\\ufeffCafe\\u0301\\r\\n\\r\\n\\tzero\\u200bwidth  \\r\\n")
    'Café\\n zerowidth'
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(map(repr, NORMALIZATIONS))}, "
            f"found {normalization!r}"
        )
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not all(map(str.isprintable, lines)):
        lines = _fix_lines(lines, remove_control_chars)
    lines = list(filter(None, map(str.rstrip, lines)))
    text = "\n".join(lines)
    # ASCII text is invariant under NFC and NFKC, and ``isascii`` reads a flag rather than
    # scanning. ``is_normalized`` is ~100x faster than ``normalize``, which costs as much on
    # text that already is normalised, so only the lines that are not get normalised.
    if (
        normalization != "none"
        and not text.isascii()
        and not unicodedata.is_normalized(normalization, text)
    ):
        text = "\n".join(
            [
                line
                if unicodedata.is_normalized(normalization, line)
                else unicodedata.normalize(normalization, line)
                for line in lines
            ]
        )
    return text
