"""The chunk cache must give exactly the tokenizer's own ids, for any text, whatever it holds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from mlm_data.text.cleaning import clean_text
from mlm_data.text.sentences import split_sentences
from mlm_data.text.tokenizer import TextEncoder, load_tokenizer
from mlm_data.text.word_cache import ChunkCache

from conftest import SHARED_BERT, TOKENIZER, demo_documents

BERT = SHARED_BERT
TOKENIZERS = [
    pytest.param(TOKENIZER, id="wordpiece-2k"),
    pytest.param(BERT, id="bert-base-uncased",
                 marks=pytest.mark.skipif(not BERT.exists(), reason="shared BERT tokenizer not present")),
]

#: Characters where tokenizers and Python disagree or that change length under normalisation:
#: every kind of whitespace and line break, controls BERT deletes, format characters, accents
#: and combining marks, CJK (BERT puts spaces around it), emoji with ZWJ, dotted capital I
#: (lower-cases to two characters), special-token text and WordPiece's own prefix.
ODD = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
       "\x00\x07\x7f\u200b\u200c\u200d\u2060\ufeff\u00ad\ufffd\uffff\ue000"
       "e\u0301\u0327\u0308éÅñßİıΣσς"
       "中文字。，日本語한국어"
       "👩\u200d💻🏴\U000e0067\U000e0062\U000e007f"
       "[]#!?.,;:'\"()-_/\\")


def plain_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


def cached_ids(cache: ChunkCache, texts: list[str]) -> list[list[int]]:
    ids, offsets = cache.encode(texts)
    return [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request) -> Tokenizer:
    return load_tokenizer(str(request.param))


def test_whole_demo_corpus_raw_and_as_pipeline_sentences(tok):
    cache = ChunkCache.for_tokenizer(tok)
    docs = demo_documents(10_000)
    sentences = [s for d in docs for s in split_sentences(clean_text(d))]
    for texts in (docs, sentences):
        for i in range(0, len(texts), 4096):
            batch = texts[i:i + 4096]
            assert cached_ids(cache, batch) == plain_ids(tok, batch)


_TINY: dict[Path, tuple[Tokenizer, ChunkCache]] = {}


def _tiny_cache(path: Path) -> tuple[Tokenizer, ChunkCache]:
    """One tokenizer and cache per file for all examples: results must not depend on what the
    cache holds. A tiny cache, so clearing it mid-batch is exercised too."""
    if path not in _TINY:
        tok = load_tokenizer(str(path))
        _TINY[path] = tok, ChunkCache.for_tokenizer(tok, max_chunks=4, max_tokens=8)
    return _TINY[path]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(ODD) | st.text(min_size=1, max_size=6) | st.sampled_from(
    ["[MASK]", "[CLS]", "##", "the", "Tokenizer", "a" * 120, " ", "  "])).map("".join), max_size=8))
def test_any_text_gives_the_tokenizers_own_ids(texts):
    for path in (TOKENIZER, BERT):
        if path.exists():
            tok, cache = _tiny_cache(path)
            assert cached_ids(cache, texts) == plain_ids(tok, texts)
            assert cached_ids(cache, texts[::-1]) == plain_ids(tok, texts[::-1])


def test_characters_bert_deletes_are_not_treated_as_separators(tok):
    cache = ChunkCache.for_tokenizer(tok)
    assert set(cache._unsafe.pattern) >= set("\x1c\x1d\x1e\x1f\x85")
    texts = ["chunk\x1cglued", "plain text", "form\x0cfeed and\x85next"]
    assert cached_ids(cache, texts) == plain_ids(tok, texts)


def _every_code_point_texts(step: int) -> list[str]:
    chars = [chr(c) for c in range(0, sys.maxunicode + 1, step) if not 0xD800 <= c <= 0xDFFF]
    chars += [c for c in ODD if c not in chars]
    # Each character inside a chunk, at both of its ends and alone, 64 characters a text.
    return [" ".join(f"x{c}y {c}z q{c} {c}" for c in chars[i:i + 64]) for i in range(0, len(chars), 64)]


def test_a_sample_of_all_code_points(tok):
    texts = _every_code_point_texts(97)
    assert cached_ids(ChunkCache.for_tokenizer(tok), texts) == plain_ids(tok, texts)


@pytest.mark.slow
def test_every_code_point(tok):
    texts = _every_code_point_texts(1)
    cache = ChunkCache.for_tokenizer(tok)
    for i in range(0, len(texts), 2048):
        assert cached_ids(cache, texts[i:i + 2048]) == plain_ids(tok, texts[i:i + 2048])


def test_cache_stays_within_its_bound_and_results_do_not_depend_on_it(tok):
    sentences = [s for d in demo_documents(40) for s in split_sentences(clean_text(d))]
    big, small = ChunkCache.for_tokenizer(tok), ChunkCache.for_tokenizer(tok, max_chunks=500, max_tokens=2000)
    for i in range(0, len(sentences), 64):
        batch = sentences[i:i + 64]
        assert cached_ids(small, batch) == cached_ids(big, batch)
        # A fresh start keeps every chunk of one batch; it never grows past that.
        assert len(small._slot) <= max(500, len({c for s in batch for c in s.split()}) + 1)


def test_encoder_word_starts_match_the_tokenizers_word_ids(tok):
    encoder = TextEncoder(tok)
    assert encoder._cache is not None
    texts = [clean_text(d)[:3000] for d in demo_documents(8)] + ["", "  leading and trailing  ", "中文 text"]
    enc = encoder.encode(texts)
    for i, e in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        span = slice(enc.offsets[i], enc.offsets[i + 1])
        assert enc.ids[span].tolist() == e.ids
        words = np.array(e.word_ids)
        np.testing.assert_array_equal(enc.word_start[span], np.r_[True, words[1:] != words[:-1]][:len(words)])


def _wordpiece(vocab: dict[str, int]) -> Tokenizer:
    return Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))


def test_tokenizers_that_look_across_whitespace_get_no_cache():
    vocab = {"[UNK]": 0, "a": 1, "b": 2}
    metaspace = _wordpiece(vocab)
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    assert ChunkCache.for_tokenizer(metaspace) is None
    replacing = _wordpiece(vocab)
    replacing.normalizer = normalizers.Replace("a b", "c")
    replacing.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert ChunkCache.for_tokenizer(replacing) is None
    spaced = _wordpiece(vocab)
    spaced.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert ChunkCache.for_tokenizer(spaced) is not None
    spaced.enable_truncation(8)
    assert ChunkCache.for_tokenizer(spaced) is None
    spaced.no_truncation()
    spaced.add_tokens(["new york"])
    assert ChunkCache.for_tokenizer(spaced) is None
