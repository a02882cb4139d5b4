"""Batch layout per task: causal LM with document ids, packed MLM without segments, token and
sequence classification labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.loading.hf_batch import hf_inputs
from trainer.loading.loader import ShardLoader

from test_loader_support import (
    iter_epoch,
    labelled_dataset,
    open_loader,
    read_rows,
    real_rows,
    take,
)


@pytest.fixture(scope="session")
def tokens(tmp_path_factory):
    return labelled_dataset(tmp_path_factory.mktemp("labelled") / "tokens", "token_classification")


@pytest.fixture(scope="session")
def sentences(tmp_path_factory):
    return labelled_dataset(tmp_path_factory.mktemp("labelled") / "sentences", "sequence_classification")


def make(path, **kw) -> ShardLoader:
    kw.setdefault("batch_size", 8)
    kw.setdefault("seed", 3)
    return open_loader([path], **kw)


def test_causal_lm_labels_and_document_ids(causal):
    rows = read_rows(causal)
    ids, starts = rows.column("input_ids").to_pylist(), rows.column("document_starts").to_pylist()
    loader = make(causal, batch_size=6, world_size=2)
    assert loader.task == "causal_lm"
    eos = loader.special_tokens["eos"]
    for b in take(iter(loader), 8):
        assert set(b) == {"input_ids", "attention_mask", "labels", "document_ids", "sample_mask", "row_id"}
        valid = b["attention_mask"].bool()
        assert torch.equal(b["labels"][valid], b["input_ids"][valid]) and (b["labels"][~valid] == -100).all()
        for i, r in enumerate(b["row_id"].tolist()):
            n = len(ids[r])
            assert b["input_ids"][i, :n].tolist() == ids[r]
            docs = b["document_ids"][i]
            assert (docs[n:] == -1).all() and docs[0] == 0
            # a new document begins exactly at each stored start (after position 0)
            increments = (torch.nonzero(docs[1:n] != docs[:n - 1]).flatten() + 1).tolist()
            assert increments == [s for s in starts[r] if s > 0]
            # and an end-of-document token closes the document before it
            assert all(ids[r][s - 1] == eos for s in increments)


def test_causal_epoch_is_exact_with_padding_rows(causal):
    rows = [real_rows(iter_epoch(make(causal, batch_size=7, world_size=2, rank=r))) for r in range(2)]
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(len(read_rows(causal))))


def test_packed_mlm_has_no_segments(docsent):
    b = next(iter(make(docsent)))
    assert set(b) == {"input_ids", "attention_mask", "labels", "sample_mask", "row_id"}
    assert b["input_ids"].shape[1] % 8 == 0


def test_token_classification_labels_are_padded_with_ignore(tokens):
    rows = read_rows(tokens)
    ids, labels = rows.column("input_ids").to_pylist(), rows.column("labels").to_pylist()
    words = rows.column("word_start").to_pylist()
    examples, windows = rows.column("example_id").to_pylist(), rows.column("window_index").to_pylist()
    loader = make(tokens, batch_size=7)
    assert loader.labels == ["O", "B-X", "I-X", "B-Y", "I-Y"]
    batches = list(iter_epoch(loader))
    assert np.array_equal(np.sort(real_rows(batches)), np.arange(90))
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "labels", "word_start", "example_id", "window_index",
                          "sample_mask", "row_id"}
        for i, r in enumerate(b["row_id"].tolist()):
            n, width = len(ids[r]), b["labels"].shape[1]
            assert b["input_ids"][i, :n].tolist() == ids[r]  # never masked: not an MLM task
            expected = labels[r] if b["sample_mask"][i] else [-100] * n
            assert b["labels"][i].tolist() == expected + [-100] * (width - n)
            # what an evaluator needs to stitch windows back into sentences and find words
            assert b["word_start"][i].tolist() == words[r] + [False] * (width - n)
            assert (b["example_id"][i].item(), b["window_index"][i].item()) == (examples[r], windows[r])


def test_sequence_classification_labels_and_token_types(sentences):
    rows = read_rows(sentences)
    seg, label = rows.column("segment_b_start").to_pylist(), rows.column("label").to_pylist()
    b = next(iter(make(sentences, batch_size=16)))
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels", "sample_mask", "row_id"}
    assert b["labels"].shape == (16,)
    for i, r in enumerate(b["row_id"].tolist()):
        assert b["labels"][i] == label[r]
        n, width = int(b["attention_mask"][i].sum()), b["input_ids"].shape[1]
        s = n if seg[r] is None else seg[r]  # no segment B: all type 0
        assert b["token_type_ids"][i].tolist() == [0] * s + [1] * (n - s) + [0] * (width - n)


def test_sequence_classification_feeds_hf_model(sentences):
    transformers = pytest.importorskip("transformers")
    loader = make(sentences, batch_size=4)
    config = transformers.BertConfig(vocab_size=loader.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, num_labels=len(loader.labels),
                                     max_position_embeddings=64)
    batch = next(iter(loader))
    out = transformers.BertForSequenceClassification(config)(
        **hf_inputs(batch))
    assert torch.isfinite(out.loss)
