"""Classification tasks end to end through Beam: label vocabularies, alignment, accounting."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.shards import decode_table, fetch_shard
from mlm_data.errors import ConfigError

CONLL = """-DOCSTART-\tO

John\tB-person
lives\tO
in\tO
Amsterdam\tB-geo-loc
.\tO

The\tO
interpreter\tO
reads\tO
Python\tB-product
code\tO

untagged

Guido\tB-person
van\tI-person
Rossum\tI-person
"""


def rows(manifest: Manifest) -> pa.Table:
    return pa.concat_tables([
        decode_table(fetch_shard(manifest.url(s.path), num_bytes=s.num_bytes, sha256=s.sha256), source=s.path)
        for s in manifest.shards])


def test_token_classification_end_to_end(tmp_path, preprocess):
    src = tmp_path / "train.conll"
    src.write_text(CONLL)
    m = preprocess(str(src), tmp_path / "ner", **{"instances.task": "token_classification",
                                                  "instances.max_seq_length": 32, "labels.stride": 8,
                                                  "clean.deduplicate": False})
    c = m.data["counts"]
    assert c["documents_read"] == 4 and c["documents_written"] == 3
    assert c["documents_dropped"] == {"invalid_record": 1}
    assert m.labels == ["O", "B-geo-loc", "B-person", "B-product", "I-person"]
    table = rows(m)
    assert set(table.column_names) >= {"input_ids", "word_start", "labels", "example_id", "window_index"}
    scored = sorted(sum(1 for x in r if x >= 0) for r in table.column("labels").to_pylist())
    assert scored == [3, 5, 5]  # one label per word, whatever the sub-token split
    assert m.data["stats"]["train"]["label_counts"]["B-person"] == 2


def test_labels_from_another_dataset_drop_unknown_tags(tmp_path, preprocess):
    train = tmp_path / "train.conll"
    train.write_text(CONLL)
    preprocess(str(train), tmp_path / "ner-train", **{"instances.task": "token_classification", "clean.deduplicate": False})
    dev = tmp_path / "dev.conll"
    dev.write_text("Ada\tB-person\nLovelace\tI-person\n\nAcme\tB-company\nwins\tO\n")
    m = preprocess(str(dev), tmp_path / "ner-dev", **{"instances.task": "token_classification",
                                                      "labels.from_dataset": str(tmp_path / "ner-train")})
    assert m.labels == ["O", "B-geo-loc", "B-person", "B-product", "I-person"]
    assert m.data["counts"]["documents_dropped"] == {"unknown_label": 1}
    assert m.data["counts"]["documents_written"] == 1


def test_sequence_classification_tsv_by_position(tmp_path, preprocess):
    src = tmp_path / "topics.tsv"
    lines = [f"{'sport' if i % 3 else 'science'}\tSentence number {i} about {'games' if i % 3 else 'atoms'}." for i in range(40)]
    src.write_text("\n".join(lines) + "\n")
    m = preprocess(str(src), tmp_path / "cls", **{
        "instances.task": "sequence_classification", "input.has_header": False, "input.label_field": "0",
        "input.text_field": "1", "output.validation_fraction": 0.2})
    assert m.labels == ["science", "sport"]
    assert m.data["counts"]["documents_written"] == 40
    table = pa.concat_tables([rows(m)])
    assert table.column("label").to_pylist().count(0) == 14  # i % 3 == 0 for 14 of 0..39
    assert set(m.splits) == {"train", "validation"}


def test_sequence_pairs_from_jsonl(tmp_path, preprocess):
    src = tmp_path / "pairs.jsonl"
    recs = [{"a": f"Premise {i}.", "b": f"Hypothesis {i}.", "y": i % 2} for i in range(10)]
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    m = preprocess(str(src), tmp_path / "pairs", **{
        "instances.task": "sequence_classification", "input.text_field": "a", "input.text_pair_field": "b",
        "input.label_field": "y"})
    table = rows(m)
    assert m.labels == ["0", "1"]
    b = table.column("segment_b_start").to_pylist()
    ids = table.column("input_ids").to_pylist()
    sep = m.special_tokens["sep"]
    assert all(row[start - 1] == sep and row[-1] == sep for row, start in zip(ids, b))


def test_classification_needs_a_tokenizer(tmp_path, preprocess):
    src = tmp_path / "train.conll"
    src.write_text(CONLL)
    with pytest.raises(ConfigError, match="needs the tokenizer of the model"):
        preprocess(str(src), tmp_path / "x", **{"instances.task": "token_classification", "tokenizer.path": None})
