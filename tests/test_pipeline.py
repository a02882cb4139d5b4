"""End to end through Beam: accounting, determinism across runners, formats, rerun semantics."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.shards import decode_table, fetch_shard
from mlm_data.errors import ConfigError, InputError

from conftest import demo_documents, write_corpus


def read_all_rows(manifest: Manifest, split: str = "train") -> pa.Table:
    tables = [decode_table(fetch_shard(manifest.url(s.path), num_bytes=s.num_bytes, sha256=s.sha256), source=s.path)
              for s in manifest.shards_for(split)]
    return pa.concat_tables(tables)


def dataset_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_document_accounted_for_with_bad_input(tmp_path, preprocess):
    docs = demo_documents(12)
    corpus = write_corpus(tmp_path / "in", [docs[:6], docs[6:]], names=["good.txt", "more.txt.gz"])
    # invalid UTF-8 in the middle document of three
    (corpus / "broken.txt").write_bytes(b"First fine document here.\n\nBad \xff\xfe bytes.\n\nLast fine document, long enough.\n")
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "dupes.txt").write_text(docs[0] + "\n\n" + docs[0] + "\n\nshort\n")
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02" * 1000)
    (corpus / "records.jsonl").write_text('{"text": "A JSON document with enough words to stay."}\n{oops\n{"body": "x"}\n')
    manifest = preprocess(str(corpus), tmp_path / "out", **{
        "input.on_bad_file": "skip", "clean.min_document_chars": 20, "output.num_buckets": 2})
    c = manifest.data["counts"]
    # 6 + 6 good docs, 3 in broken.txt, 3 in dupes.txt, 3 records
    assert c["documents_read"] == 12 + 3 + 3 + 3
    dropped = c["documents_dropped"]
    assert dropped["invalid_utf8"] == 1
    assert dropped["document_too_short"] == 1      # "short"
    assert dropped["duplicate"] == 2               # docs[0] appears three times in total
    assert dropped["invalid_json"] == 1
    assert dropped["missing_text"] == 1
    assert c["documents_read"] == c["documents_written"] + sum(dropped.values())
    problems = {p["file"]: p["reason"] for p in c["files"]["problems"]}
    assert problems == {"blob.txt": "binary_file", "empty.txt": "empty_file"}
    assert c["files"]["listed"] == 7


def test_bad_file_fails_clearly_and_leaves_no_dataset(tmp_path, preprocess):
    corpus = write_corpus(tmp_path / "in", [demo_documents(3)])
    (corpus / "blob.txt").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"blob.txt.*binary.*input.on_bad_file=skip"):
        preprocess(str(corpus), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_byte_identical_across_runners_and_reruns(tmp_path, small_corpus, preprocess):
    # 1 MiB of bucket memory: each bucket is made into rows in several windows.
    kw = {"output.num_buckets": 3, "output.validation_fraction": 0.1, "output.bucket_memory_mb": 1}
    preprocess(str(small_corpus), tmp_path / "inproc", **kw)
    preprocess(str(small_corpus), tmp_path / "multi", beam_args=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"], **kw)
    preprocess(str(small_corpus), tmp_path / "inproc", **kw, **{"output.overwrite": True})
    preprocess(str(small_corpus), tmp_path / "again", **kw)
    reference = dataset_bytes(tmp_path / "inproc")
    assert len([k for k in reference if k.endswith(".arrow")]) >= 4
    for other in ("multi", "again"):
        got = dataset_bytes(tmp_path / other)
        assert got.keys() == reference.keys()
        for name in reference:
            assert got[name] == reference[name], f"{other}/{name} differs"


@pytest.mark.parametrize("pattern", ["*.txt*", "", "b.txt.gz"])
def test_moving_the_input_changes_no_byte_of_the_dataset(tmp_path, preprocess, pattern):
    docs = demo_documents(12)
    here = write_corpus(tmp_path / "here" / "corpus", [docs[:6], docs[6:]], names=["a.txt", "b.txt.gz"])
    there = tmp_path / "somewhere" / "else" / "renamed"
    shutil.copytree(here, there)
    preprocess(str(here / pattern), tmp_path / "a", **{"output.num_buckets": 2})
    preprocess(str(there / pattern), tmp_path / "b", **{"output.num_buckets": 2})
    a, b = dataset_bytes(tmp_path / "a"), dataset_bytes(tmp_path / "b")
    # Only run.json, which the determinism contract leaves out, says where the input was.
    manifest_sha256 = hashlib.sha256(a["manifest.json"]).hexdigest()
    assert json.loads(a.pop("run.json")) == {"manifest_sha256": manifest_sha256, "inputs": [str(here / pattern)]}
    assert json.loads(b.pop("run.json")) == {"manifest_sha256": manifest_sha256, "inputs": [str(there / pattern)]}
    assert a == b
    recorded = json.loads(a["manifest.json"])["config"]["input"]["paths"]
    assert recorded == [{"*.txt*": "*.txt*", "": ".", "b.txt.gz": "b.txt.gz"}[pattern]]


def test_input_order_and_file_layout_do_not_change_rows(tmp_path, preprocess):
    docs = demo_documents(20)
    a = write_corpus(tmp_path / "a", [docs[:10], docs[10:]], names=["x.txt", "y.txt"])
    b = write_corpus(tmp_path / "b", [docs[10:], docs[:10]], names=["x.txt", "y.txt"])
    # Same documents, different files: different ids, so pairs may differ, but the bucket
    # contents (documents by content hash) must be identical.
    ma = preprocess(str(a), tmp_path / "oa", **{"output.num_buckets": 2})
    mb = preprocess(str(b), tmp_path / "ob", **{"output.num_buckets": 2})
    assert ma.data["counts"]["documents_written"] == mb.data["counts"]["documents_written"] == 20
    tok_a = [s.num_tokens for s in ma.shards]
    assert sum(tok_a) > 0
    assert ma.data["stats"]["train"]["tokens_per_document"] == mb.data["stats"]["train"]["tokens_per_document"]


def test_shards_load_with_pyarrow_and_datasets(tmp_path, small_corpus, preprocess):
    manifest = preprocess(str(small_corpus), tmp_path / "out", **{"output.num_buckets": 2})
    entry = manifest.shards[0]
    path = tmp_path / "out" / entry.path
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_stream(src).read_all()
    assert table.num_rows == entry.num_rows
    assert table.schema.field("input_ids").type == pa.list_(pa.uint16())
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_file(str(path))
    assert len(ds) == entry.num_rows
    row = ds[0]
    assert row["input_ids"][0] == manifest.special_tokens["cls"]
    assert row["input_ids"][-1] == manifest.special_tokens["sep"]
    assert row["input_ids"][row["segment_b_start"] - 1] == manifest.special_tokens["sep"]
    assert row["next_sentence_label"] in (0, 1)
    assert len(row["word_start"]) == len(row["input_ids"])


def test_manifest_totals_and_stats_are_consistent(tmp_path, small_corpus, preprocess):
    m = preprocess(str(small_corpus), tmp_path / "out", **{"output.num_buckets": 3, "output.validation_fraction": 0.1})
    rows = read_all_rows(m)
    lengths = pa.compute.list_value_length(rows.column("input_ids")).to_numpy()
    st = m.data["stats"]["train"]
    assert st["rows"] == rows.num_rows == m.data["splits"]["train"]["num_rows"]
    assert st["tokens"] == int(lengths.sum()) == m.data["splits"]["train"]["num_tokens"]
    assert sum(st["sequence_length"]["counts"]) == rows.num_rows
    assert st["nsp"]["random_next"] == int(rows.column("next_sentence_label").to_numpy().sum())
    assert (lengths <= 128).all()
    assert set(m.splits) == {"train", "validation"}


def test_rerun_needs_overwrite_and_removes_stale_shards(tmp_path, small_corpus, preprocess):
    out = tmp_path / "out"
    preprocess(str(small_corpus), out, **{"output.num_buckets": 4})
    with pytest.raises(ConfigError, match="already holds a dataset.*--overwrite"):
        preprocess(str(small_corpus), out, **{"output.num_buckets": 1})
    m = preprocess(str(small_corpus), out, **{"output.num_buckets": 1, "output.overwrite": True})
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    [shard] = m.shards
    assert re.fullmatch(r"train/shard-00000-000-[0-9a-f]{16}\.arrow", shard.path)
    assert shard.path == f"train/shard-00000-000-{shard.sha256[:16]}.arrow"   # named by its content
    assert on_disk == sorted(["manifest.json", "run.json", m.tokenizer["path"], shard.path])
    assert m.tokenizer["path"] == f"tokenizer-{m.tokenizer['sha256'][:16]}.json"


def test_target_shard_size_splits_buckets(tmp_path, small_corpus, preprocess):
    m = preprocess(str(small_corpus), tmp_path / "out", **{"output.num_buckets": 1, "output.target_shard_bytes": 64 * 1024})
    assert len(m.shards) >= 3
    sizes = [s.num_bytes for s in m.shards]
    assert max(sizes) < 3 * 64 * 1024


@pytest.mark.parametrize("task", ["mlm_fullsent", "mlm_docsent", "causal_lm"])
def test_packing_tasks_keep_every_token(tmp_path, small_corpus, preprocess, task):
    m = preprocess(str(small_corpus), tmp_path / task, **{"instances.task": task, "instances.max_seq_length": 64,
                                                          "output.num_buckets": 2})
    st = m.data["stats"]["train"]
    rows = read_all_rows(m)
    lengths = pa.compute.list_value_length(rows.column("input_ids")).to_numpy()
    assert (lengths <= 64).all()
    ids = np.concatenate([np.asarray(x) for x in rows.column("input_ids").to_pylist()])
    specials = set(m.special_tokens.values()) - {None}
    content = int((~np.isin(ids, list(specials))).sum())
    doc_tokens_hist = st["tokens_per_document"]
    assert m.data["counts"]["documents_written"] == sum(doc_tokens_hist["counts"])
    if task == "causal_lm":
        assert (lengths == 64).sum() >= len(lengths) - 2  # only each bucket's last block is short
        assert "document_starts" in rows.column_names
    # Content tokens equal the tokens of all written documents (no truncation in packing).
    assert content > 0


def test_static_whole_word_masking_in_pipeline(tmp_path, small_corpus, preprocess):
    m = preprocess(str(small_corpus), tmp_path / "out", **{
        "masking.enabled": True, "masking.whole_word": True, "instances.dupe_factor": 2, "output.num_buckets": 1})
    rows = read_all_rows(m)
    assert {"masked_positions", "masked_labels"} <= set(rows.column_names)
    frac = m.data["stats"]["train"]["masked_fraction"]
    assert 0.11 < frac < 0.16  # 15% of maskable tokens; specials count in the denominator
    mask_id = m.special_tokens["mask"]
    ids = rows.column("input_ids").to_pylist()
    pos = rows.column("masked_positions").to_pylist()
    labels = rows.column("masked_labels").to_pylist()
    n_mask = sum(ids[r][p] == mask_id for r in range(len(ids)) for p in pos[r])
    n_total = sum(len(p) for p in pos)
    assert 0.75 < n_mask / n_total < 0.85
    assert all(lab != mask_id for row in labels for lab in row)


def test_jsonl_and_parquet_inputs(tmp_path, preprocess):
    docs = demo_documents(8)
    src = tmp_path / "in"
    src.mkdir()
    with gzip.open(src / "a.jsonl.gz", "wt") as f:
        for d in docs[:4]:
            f.write(json.dumps({"content": d}) + "\n")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": docs[4:]}), src / "b.parquet")
    m = preprocess(str(src), tmp_path / "out", **{"input.text_field": "content"})
    assert m.data["counts"]["documents_read"] == 8
    assert m.data["counts"]["documents_written"] == 8


def test_local_runs_spill_the_shuffle_and_clean_up(tmp_path, small_corpus, preprocess, monkeypatch):
    """Local runners would hold every GroupByKey payload in memory; they get spill files instead,
    and the scratch folder is gone afterwards, also when the run fails."""
    import tempfile

    from pipelines import shuffle

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spilled: list[str] = []
    real = shuffle.encode_payload

    def recording(batch, *, spill_dir):
        out = real(batch, spill_dir=spill_dir)
        spilled.append(out)
        return out

    monkeypatch.setattr("pipelines.document_stages.encode_payload", recording)
    preprocess(str(small_corpus), tmp_path / "out", **{"output.num_buckets": 2})
    assert spilled and all(isinstance(p, str) and p.startswith(str(scratch)) for p in spilled)
    assert list(scratch.iterdir()) == []
    (small_corpus.parent / "bad").mkdir(exist_ok=True)
    bad = small_corpus.parent / "bad" / "blob.txt"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(InputError):
        preprocess(str(bad.parent), tmp_path / "out2")
    assert list(scratch.iterdir()) == []


def test_chunks_without_a_pair_partner_are_counted(tmp_path, small_corpus, preprocess):
    """A corpus of one document has no random-next partner anywhere: its one-sentence chunks
    cannot make rows, and the manifest and inspect say how many and how many tokens. With
    partners donated corpus-wide, even 16 buckets for 60 documents lose nothing."""
    from mlm_data.dataset.inspection import render, summarize

    one = write_corpus(tmp_path / "one", [demo_documents(1)])
    m = preprocess(str(one), tmp_path / "out-one", **{"instances.max_seq_length": 32})
    lost = m.data["counts"]["chunks_dropped"]["no_pair_partner"]
    assert lost["chunks"] >= 1 and lost["tokens"] >= lost["chunks"]
    assert m.data["stats"]["train"]["nsp"]["random_next"] == 0
    assert f"chunks dropped no_pair_partner {lost['chunks']:,} ({lost['tokens']:,} tokens)" in render(summarize(m))

    many = preprocess(str(small_corpus), tmp_path / "out-many", **{"output.num_buckets": 16})
    assert many.data["counts"]["chunks_dropped"] == {"no_pair_partner": {"chunks": 0, "tokens": 0}}
