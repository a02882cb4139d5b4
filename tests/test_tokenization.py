"""Tokenizer loading and batched encoding: the fast paths must equal the plain ones exactly."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from mlm_data.errors import TokenizerError
from mlm_data.text.cleaning import clean_text
from mlm_data.text.sentences import split_sentences
from mlm_data.text.tokenizer import TextEncoder, load_tokenizer, parse_tokenizer

from conftest import TOKENIZER, demo_documents


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(load_tokenizer(str(TOKENIZER)))


def test_grouped_encoding_equals_one_call_per_sentence(encoder):
    groups = [split_sentences(clean_text(d)) for d in demo_documents(30)]
    groups[4:4] = [[], ["", "Only one."], ["Trailing empty.", ""]]
    plain = encoder.encode([s for g in groups for s in g])
    grouped = encoder.encode_grouped(groups)
    np.testing.assert_array_equal(grouped.ids, plain.ids)
    np.testing.assert_array_equal(grouped.offsets, plain.offsets)
    np.testing.assert_array_equal(grouped.word_start, plain.word_start)


def test_text_holding_the_break_character_falls_back(encoder):
    groups = [["A \x1f inside.", "Second."], ["Other."]]
    plain = encoder.encode([s for g in groups for s in g])
    np.testing.assert_array_equal(encoder.encode_grouped(groups).ids, plain.ids)


def test_word_starts_from_prefix_table_equal_word_ids(encoder):
    texts = [clean_text(d)[:2000] for d in demo_documents(5)]
    fast = encoder.encode(texts)
    encs = encoder.tok.encode_batch(texts, add_special_tokens=False)
    for i, e in enumerate(encs):
        words = np.array(e.word_ids)
        expected = np.r_[True, words[1:] != words[:-1]]
        np.testing.assert_array_equal(fast.word_start[fast.offsets[i]:fast.offsets[i + 1]], expected)


def test_other_models_use_word_ids():
    vocab = {"[UNK]": 0, "hel": 1, "lo": 2, "world": 3}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    enc = TextEncoder(tok).encode_grouped([["world world", "hel"]])
    assert enc.ids.tolist() == [3, 3, 1] and enc.offsets.tolist() == [0, 2, 3]
    assert enc.word_start.tolist() == [True, True, True]


def test_tokenizer_errors_name_the_file(tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(TokenizerError, match="tok.json: not a HF tokenizers file"):
        load_tokenizer(str(bad))
    with pytest.raises(TokenizerError, match="wordpiece-2k.json: changed while the pipeline was running"):
        load_tokenizer(str(TOKENIZER), sha256="0" * 64)
    with pytest.raises(TokenizerError, match="invalid JSON"):
        parse_tokenizer("{oops", source="x.json")


def test_tokenizer_can_be_named_by_file_dataset_or_folder(tmp_path, small_corpus, preprocess):
    from mlm_data.text.tokenizer import user_tokenizer_text

    expected = TOKENIZER.read_text(encoding="utf-8")
    preprocess(str(small_corpus), tmp_path / "ds", **{"output.num_buckets": 1})
    model_dir = tmp_path / "hf-model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text(expected, encoding="utf-8")
    for name in (str(TOKENIZER), str(tmp_path / "ds"), str(model_dir)):
        text, source = user_tokenizer_text(name)
        assert text == expected and source.endswith(".json"), name

    # A dataset's tokenizer is its own: one changed after the fact is refused, not used.
    [tok_file] = (tmp_path / "ds").glob("tokenizer-*.json")
    tok_file.write_text(expected.replace('"[MASK]"', '"[MASKED]"'), encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer checksum mismatch"):
        user_tokenizer_text(str(tmp_path / "ds"))
    with pytest.raises(TokenizerError, match="is a directory with no manifest.json or tokenizer.json"):
        user_tokenizer_text(str(tmp_path))
