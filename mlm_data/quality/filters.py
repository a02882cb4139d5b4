"""Rule-based quality filters over a batch of documents (Gopher / C4 style heuristics).

``evaluate`` computes, for every document of a batch, the first rule of ``FilterConfig`` it
fails (or None). Features are computed only for the rules that are on, vectorised over the
whole batch where the work is per character or per word: characters are classified through a
code-point lookup table, words and n-grams are the stable hashes of ``words``. Per-line work
(punctuation at line ends, repeated lines) uses C-level string methods. The language rule,
the one slow rule, runs last and only on documents every other rule kept.

Definitions (the thresholds in ``FilterConfig`` are compared with these):

- *words*: whitespace-separated tokens; mean word length = non-space characters / words.
- *letters / symbols*: shares of non-space characters; symbols are Unicode symbols (S*),
  private-use and unassigned code points, and the markup punctuation ``# * \\ _ { } [ ] @``
  is not counted as prose punctuation but as a symbol.
- *lines*: the lines of the cleaned text; *paragraphs*: blocks of the input text separated by
  blank lines. A repeated line or paragraph is one equal to an earlier one.
- *n-gram rules*: n-grams of lowercased words without punctuation (``words.words_of``);
  characters are the characters of those words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from mlm_data.accounting import FILTER_RULES, Counts
from mlm_data.config.preprocess import CleanConfig, FilterConfig
from mlm_data.quality.documents import clean, cleaning_drop
from mlm_data.quality.language import LanguageDetector
from mlm_data.quality.stopwords import ENGLISH_STOP_WORDS
from mlm_data.quality.words import BatchWords, batch_words, ngrams, word_hash
from mlm_data.reading.document_reader import Document

SPACE, LETTER, DIGIT, MARK, PUNCT, SYMBOL = range(6)
_MARKUP = set("#*\\_{}[]@")
_TERMINAL = (".", "!", "?", ":", ";", "…", "。", "！", "？")
_CLOSERS = "\"')]}’”»›」』"
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")


@lru_cache(maxsize=1)
def char_classes() -> np.ndarray:
    """Class of every code point (``SPACE`` ... ``SYMBOL``), built once per process (~0.3 s)."""
    table = np.full(0x110000, SYMBOL, dtype=np.uint8)
    first = {"L": LETTER, "N": DIGIT, "M": MARK, "P": PUNCT, "Z": SPACE}
    for cp in range(0x110000):
        c = chr(cp)
        cls = first.get(unicodedata.category(c)[0])
        if cls is not None:
            table[cp] = cls
    for c in _MARKUP:
        table[ord(c)] = SYMBOL
    for c in "\t\n\r\x0b\x0c":
        table[ord(c)] = SPACE
    return table


def class_counts(texts: Sequence[str]) -> np.ndarray:
    """``(D, 6)`` characters of each class per document."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4")
    cls = char_classes()[cps].astype(np.int64)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    return np.bincount(doc * 6 + cls, minlength=len(texts) * 6).reshape(len(texts), 6)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num), dtype=np.float64), where=den > 0)


def _repeats(parts: list[str]) -> tuple[int, int, int, int]:
    """``(repeated parts, parts, characters in repeated parts, characters)``."""
    counts = Counter(parts)
    repeated = sum(c - 1 for c in counts.values())
    repeated_chars = sum(len(p) * (c - 1) for p, c in counts.items() if c > 1)
    return repeated, len(parts), repeated_chars, sum(map(len, parts))


def _repeat_fractions(docs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([_repeats(parts) for parts in docs], dtype=np.float64).reshape(len(docs), 4)
    return _ratio(r[:, 0], r[:, 1]), _ratio(r[:, 2], r[:, 3])


def _ends_in_punctuation(line: str) -> bool:
    return line.rstrip(_CLOSERS).endswith(_TERMINAL)


def _doc_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``values[offsets[d]:offsets[d+1]]`` for every document ``d``."""
    csum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def top_ngram_char_fraction(words: BatchWords, n: int) -> np.ndarray:
    """Per document: characters covered by its most repeated n-gram (count x length) over all
    word characters; 0 when no n-gram repeats. Ties in count go to the longer n-gram."""
    g = ngrams(words, n, whole_short_documents=False)
    num_docs = len(words.offsets) - 1
    out = np.zeros(num_docs)
    if len(g.hashes) == 0:
        return out
    doc = np.repeat(np.arange(num_docs), np.diff(g.offsets))
    char_csum = np.concatenate([[0], np.cumsum(words.lengths)])
    chars = char_csum[g.starts + n] - char_csum[g.starts]
    order = np.lexsort((g.hashes, doc))
    d, h = doc[order], g.hashes[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (d[1:] != d[:-1]) | (h[1:] != h[:-1])
    first = np.flatnonzero(new)
    count = np.diff(np.append(first, len(order)))
    group_doc, group_chars = d[first], chars[order][first]
    rep = count > 1
    best = np.lexsort((group_chars[rep], count[rep], group_doc[rep]))
    gd = group_doc[rep][best]
    last = np.flatnonzero(np.append(gd[1:] != gd[:-1], True))
    covered = np.zeros(num_docs)
    covered[gd[last]] = (count[rep][best] * group_chars[rep][best])[last]
    return _ratio(covered, _doc_sums(words.lengths, words.offsets).astype(np.float64))


def duplicate_ngram_char_fraction(words: BatchWords, n: int) -> np.ndarray:
    """Per document: share of word characters inside n-grams that occurred earlier in it."""
    g = ngrams(words, n, whole_short_documents=False)
    num_docs = len(words.offsets) - 1
    if len(g.hashes) == 0:
        return np.zeros(num_docs)
    doc = np.repeat(np.arange(num_docs), np.diff(g.offsets))
    order = np.lexsort((g.starts, g.hashes, doc))
    d, h = doc[order], g.hashes[order]
    again = np.zeros(len(order), dtype=bool)
    again[1:] = (d[1:] == d[:-1]) & (h[1:] == h[:-1])
    starts = g.starts[order][again]
    delta = np.bincount(starts, minlength=len(words.hashes) + n) - np.bincount(starts + n, minlength=len(words.hashes) + n)
    covered = np.cumsum(delta)[:len(words.hashes)] > 0
    return _ratio(_doc_sums(words.lengths * covered, words.offsets).astype(np.float64),
                  _doc_sums(words.lengths, words.offsets).astype(np.float64))


@lru_cache(maxsize=1)
def _stop_hashes() -> np.ndarray:
    return np.array(sorted(word_hash(w) for w in ENGLISH_STOP_WORDS), dtype=np.uint64)


class QualityFilter:
    """The configured rules; ``evaluate`` names the first rule each document fails."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg
        self._detector = LanguageDetector() if cfg.languages else None

    def evaluate(self, texts: Sequence[str], paragraphs_of: Sequence[str] | None = None) -> list[str | None]:
        """The failed rule per text, or None. ``paragraphs_of`` are the texts as read (blank
        lines between paragraphs), needed only by the paragraph rules; default ``texts``."""
        cfg = self.cfg
        num = len(texts)
        fails: dict[str, np.ndarray] = {}
        if any(getattr(cfg, r) is not None for r in ("min_words", "max_words", "min_mean_word_length",
                                                      "max_mean_word_length", "min_alpha_fraction",
                                                      "max_symbol_fraction")):
            cc = class_counts(texts)
            nonspace = (cc.sum(axis=1) - cc[:, SPACE]).astype(np.float64)
            num_words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=num)
            mean_len = _ratio(nonspace, num_words.astype(np.float64))
            checks = {
                "min_words": lambda v: num_words < v, "max_words": lambda v: num_words > v,
                "min_mean_word_length": lambda v: mean_len < v, "max_mean_word_length": lambda v: mean_len > v,
                "min_alpha_fraction": lambda v: _ratio(cc[:, LETTER].astype(np.float64), nonspace) < v,
                "max_symbol_fraction": lambda v: _ratio(cc[:, SYMBOL].astype(np.float64), nonspace) > v,
            }
            for rule, check in checks.items():
                if getattr(cfg, rule) is not None:
                    fails[rule] = check(getattr(cfg, rule))
        if cfg.min_lines_ending_in_punctuation is not None:
            frac = np.array([sum(map(_ends_in_punctuation, lines)) / len(lines)
                             for lines in (t.split("\n") for t in texts)], dtype=np.float64)
            fails["min_lines_ending_in_punctuation"] = frac < cfg.min_lines_ending_in_punctuation
        if cfg.max_duplicate_line_fraction is not None or cfg.max_duplicate_line_char_fraction is not None:
            by_count, by_chars = _repeat_fractions([t.split("\n") for t in texts])
            self._limit(fails, "max_duplicate_line_fraction", by_count)
            self._limit(fails, "max_duplicate_line_char_fraction", by_chars)
        if cfg.max_duplicate_paragraph_fraction is not None or cfg.max_duplicate_paragraph_char_fraction is not None:
            source = texts if paragraphs_of is None else paragraphs_of
            by_count, by_chars = _repeat_fractions(
                [[p.strip() for p in _PARAGRAPH_BREAK.split(t) if p.strip()] for t in source])
            self._limit(fails, "max_duplicate_paragraph_fraction", by_count)
            self._limit(fails, "max_duplicate_paragraph_char_fraction", by_chars)
        if cfg.max_top_ngram_char_fraction or cfg.max_duplicate_ngram_char_fraction or cfg.min_stop_words is not None:
            words = batch_words(texts)
            if cfg.max_top_ngram_char_fraction:
                fails["max_top_ngram_char_fraction"] = np.any(
                    [top_ngram_char_fraction(words, n) > limit for n, limit in cfg.max_top_ngram_char_fraction.items()],
                    axis=0)
            if cfg.max_duplicate_ngram_char_fraction:
                fails["max_duplicate_ngram_char_fraction"] = np.any(
                    [duplicate_ngram_char_fraction(words, n) > limit
                     for n, limit in cfg.max_duplicate_ngram_char_fraction.items()], axis=0)
            if cfg.min_stop_words is not None:
                is_stop = np.isin(words.hashes, _stop_hashes())
                fails["min_stop_words"] = _doc_sums(is_stop, words.offsets) < cfg.min_stop_words
        out: list[str | None] = [None] * num
        for rule in FILTER_RULES:
            if rule in fails:
                for i in np.flatnonzero(fails[rule]).tolist():
                    if out[i] is None:
                        out[i] = rule
        if self._detector is not None:
            keep = set(cfg.languages)
            for i, text in enumerate(texts):
                if out[i] is None:
                    lang, prob = self._detector.detect(text[:cfg.language_sample_chars])
                    if lang not in keep or prob < cfg.min_language_score:
                        out[i] = "languages"
        return out

    def _limit(self, fails: dict[str, np.ndarray], rule: str, values: np.ndarray) -> None:
        limit = getattr(self.cfg, rule)
        if limit is not None:
            fails[rule] = values > limit

    def filter_documents(self, docs: Sequence[Document], clean_cfg: CleanConfig) -> tuple[list[Document], Counts]:
        """The documents that pass, cleaned, in order, and the others counted as ``filter.<rule>``.

        Rules see the text as cleaning leaves it (the paragraph rules the text as read);
        documents that cleaning will drop are not judged and pass through, cleaned too, for
        ``CleanAndSplit`` to count under its own reason."""
        texts = [clean(d.text, clean_cfg) for d in docs]
        judged = [i for i, t in enumerate(texts) if cleaning_drop(t, clean_cfg) is None]
        rules = self.evaluate([texts[i] for i in judged], [docs[i].text for i in judged])
        failed = dict(zip(judged, rules))
        counts = Counts()
        kept: list[Document] = []
        for i, doc in enumerate(docs):
            rule = failed.get(i)
            if rule is not None:
                counts.drop(f"filter.{rule}")
            else:
                kept.append(Document(doc.id, texts[i]))
        return kept, counts
