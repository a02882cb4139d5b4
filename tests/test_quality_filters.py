"""Quality filters: every rule on hand-made documents just inside and just outside its limit,
the ledger through the pipeline, and the configuration errors."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from mlm_data.accounting import FILTER_RULES
from mlm_data.config.loading import load
from mlm_data.config.preprocess import CleanConfig, FilterConfig, PreprocessConfig
from mlm_data.errors import ConfigError
from mlm_data.quality import language
from mlm_data.quality.filters import (
    QualityFilter,
    duplicate_ngram_char_fraction,
    top_ngram_char_fraction,
)
from mlm_data.quality.words import batch_words
from mlm_data.reading.document_reader import Document
from pipelines.quality import FilterFn

from conftest import demo_documents, write_corpus

# (rule settings, text that passes: at the limit, text that fails: just past it)
CASES = [
    ({"min_words": 5}, "one two three four five", "one two three four"),
    ({"max_words": 5}, "one two three four five", "one two three four five six"),
    ({"min_mean_word_length": 4}, "abcd abcd", "abc abcd"),                 # mean 4 / 3.5
    ({"max_mean_word_length": 4}, "abcd abcd", "abcde abcd"),               # mean 4 / 4.5
    ({"min_alpha_fraction": 0.8}, "abcd1", "abc12"),                        # 4/5 / 3/5 letters
    ({"max_symbol_fraction": 0.2}, "ab, cd#", "ab{ cd#"),                   # 1/6 / 2/6: ',' is prose, '{' is not
    ({"max_symbol_fraction": 0.25}, "word ⚡ is", "word ⚡⚡ is"),              # 1/7 -> 2/8 passes; see below
    ({"min_lines_ending_in_punctuation": 0.5}, 'He said "yes."\nno', "a.\nb\nc"),  # 1/2 / 1/3
    ({"max_duplicate_line_fraction": 0.25}, "a\nb\nc\na", "a\nb\na\na"),         # 1/4 / 2/4 repeated
    ({"max_duplicate_line_char_fraction": 0.25}, "aa\nbb\ncc\naa", "aaa\nb\naaa"),  # 2/8 / 3/7 characters
    ({"max_duplicate_paragraph_fraction": 0.34}, "p one\n\np two\n\np one", "p one\n\np one\n\np one"),
    ({"max_duplicate_paragraph_char_fraction": 0.5}, "ab\n\nab", "ab\n\nab\n\nab"),  # 2/4 / 4/6
    ({"max_top_ngram_char_fraction": {2: 0.4}}, "a b a b c d e f g h", "a b a b c d e f g"),  # 4/10 / 4/9
    ({"max_duplicate_ngram_char_fraction": {2: 1 / 3}}, "a b c a b d", "a b c a b"),     # 2/6 / 2/5
    ({"min_stop_words": 2}, "The cat of mine", "The cat sat"),
]


@pytest.mark.parametrize(("rule", "passes", "fails"), CASES, ids=[f"{next(iter(c[0]))}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_keeps_its_limit_and_drops_past_it(rule, passes, fails):
    name = next(iter(rule))
    f = QualityFilter(FilterConfig(**rule))
    got = f.evaluate([passes, fails])
    if rule == {"max_symbol_fraction": 0.25}:       # 1/7 and 2/8: both at or under the limit
        assert got == [None, None]
        assert QualityFilter(FilterConfig(max_symbol_fraction=0.24)).evaluate([fails]) == ["max_symbol_fraction"]
        return
    assert got == [None, name]


def test_ngram_fractions_by_hand():
    words = batch_words(["the cat the cat the cat the cat and", "a b c a b d", ""])
    assert top_ngram_char_fraction(words, 2).tolist() == pytest.approx([24 / 27, 4 / 6, 0.0])
    assert duplicate_ngram_char_fraction(words, 2).tolist() == pytest.approx([18 / 27, 2 / 6, 0.0])


def test_first_failing_rule_in_config_order_names_the_drop():
    f = QualityFilter(FilterConfig(min_words=3, min_stop_words=1, max_symbol_fraction=0.1))
    assert f.evaluate(["##", "#### #### ####", "cats dogs birds", "the cats dogs"]) == [
        "min_words", "max_symbol_fraction", "min_stop_words", None]


def test_language_rule_keeps_english_and_drops_german():
    pytest.importorskip("py3langid")
    f = QualityFilter(FilterConfig(languages=("en",), min_language_score=0.9))
    got = f.evaluate(["The quick brown fox jumps over the lazy dog, and then it runs away into the woods.",
                      "Der schnelle braune Fuchs springt über den faulen Hund und läuft dann in den Wald."])
    assert got == [None, "languages"]


def test_language_rule_without_py3langid_is_a_config_error(monkeypatch):
    monkeypatch.setattr(language, "_load_module", lambda: None)
    with pytest.raises(ConfigError, match=r"filters.languages: needs the py3langid package.*pip install"):
        load(PreprocessConfig, settings={"filters.languages": ["en"]})


def test_config_errors_are_collected_with_their_fields():
    with pytest.raises(ConfigError) as e:
        load(PreprocessConfig, settings={"filters.min_alpha_fraction": 1.5, "filters.max_top_ngram_char_fraction": {"x": 0.2},
                                            "filters.languages": ["xx"], "dedup.bands": 3})
    msg = str(e.value)
    assert "filters.min_alpha_fraction: must be between 0 and 1" in msg
    assert "filters.max_top_ngram_char_fraction: keys are n-gram sizes" in msg
    assert "filters.languages: unknown language code(s) 'xx'" in msg or "py3langid" in msg
    assert "dedup.bands and rows: give both or neither" in msg
    with pytest.raises(ConfigError, match="filters: apply to text corpora"):
        load(PreprocessConfig, settings={"filters.min_words": 3, "instances.task": "sequence_classification"})


def test_rule_names_are_the_config_fields_and_all_default_off():
    fields = [f.name for f in dataclasses.fields(FilterConfig)]
    assert list(FILTER_RULES) == [f for f in fields if f not in ("min_language_score", "language_sample_chars")]
    assert not FilterConfig().enabled()
    assert FilterConfig(max_top_ngram_char_fraction={"3": 0.2}).max_top_ngram_char_fraction == {3: 0.2}


def test_documents_that_cleaning_drops_pass_through_for_it_to_count():
    docs = [Document("a#0", "  \n\t"), Document("a#1", "short"), Document("a#2", "one two\r\nthree four five")]
    kept, counts = QualityFilter(FilterConfig(min_words=5)).filter_documents(docs, CleanConfig(min_document_chars=6))
    assert [d.id for d in kept] == ["a#0", "a#1", "a#2"]
    assert kept[2].text == "one two\nthree four five"          # handed on cleaned
    assert not counts.dropped


def test_filter_fn_pickles():
    fn = pickle.loads(pickle.dumps(FilterFn(FilterConfig(min_words=3), CleanConfig())))
    fn.setup()
    from mlm_data.stages.batches import Batch
    out = list(fn.process(Batch(items=[Document("x#0", "a b"), Document("x#1", "a b c")])))
    assert [d.id for d in out[0].items] == ["x#1"] and out[0].counts.dropped == {"filter.min_words": 1}


def test_pipeline_ledger_counts_each_rule_and_inspect_shows_it(tmp_path, preprocess):
    from mlm_data.dataset.inspection import render, summarize

    docs = demo_documents(20)
    junk = ["too few words here", "#### {{{ }}} <<<>>> |||| ~~~~ ^^^^ ====", "Buy now\nBuy now\nBuy now\nBuy now"]
    corpus = write_corpus(tmp_path / "in", [docs[:10] + junk, docs[10:]])
    manifest = preprocess(str(corpus), tmp_path / "out", **{
        "filters.min_words": 5, "filters.max_symbol_fraction": 0.3, "filters.max_duplicate_line_fraction": 0.5})
    c = manifest.data["counts"]
    assert c["documents_dropped"] == {"filter.min_words": 1, "filter.max_symbol_fraction": 1,
                                      "filter.max_duplicate_line_fraction": 1}
    assert c["documents_read"] == 23 == c["documents_written"] + 3
    text = render(summarize(manifest, sample=False))
    assert "dropped filter.min_words" in text
