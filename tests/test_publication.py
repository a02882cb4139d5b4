"""``--overwrite`` never loses a good dataset: every check runs before the output is touched,
the old dataset stays readable and valid (manifest and checksums) while the new one is
written, a failed run leaves exactly the old dataset, and a finished one replaces it whole."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from mlm_data import storage
from mlm_data.dataset.inspection import verify
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.publication import Output, discard_unpublished
from mlm_data.errors import OutputBusyError
from mlm_data.storage.lease import WriterLease
from pipelines.cli import main

from conftest import TOKENIZER, write_corpus

KW = {"output.num_buckets": 2, "output.validation_fraction": 0.1}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def old(tmp_path: Path, small_corpus: Path, preprocess) -> tuple[Path, dict[str, bytes]]:
    """A good dataset at ``tmp_path/ds``, and its files."""
    root = tmp_path / "ds"
    preprocess(str(small_corpus), root, **KW)
    return root, files(root)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_intact(root: Path, before: dict[str, bytes]) -> None:
    assert files(root) == before
    report = verify(Manifest.load(str(root)))
    assert report.ok, report.problems


@pytest.mark.parametrize(("case", "expected"), [
    ("bad tokenizer", "not a tokenizer"),
    ("no inputs", "matched no files"),
    ("tokenizer without [MASK]", "needs special tokens the vocabulary lacks (mask:"),
])
def test_a_problem_found_before_the_run_leaves_the_old_dataset_untouched(case, expected, old, small_corpus, tmp_path,
                                                                         capsys):
    root, before = old
    tokenizer, inputs = str(TOKENIZER), str(small_corpus)
    if case == "bad tokenizer":
        tokenizer = str(small_corpus / "a.txt")
    elif case == "no inputs":
        inputs = str(tmp_path / "nothing-here" / "*.txt")
    else:
        spec = json.loads(TOKENIZER.read_text())
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[MASK]"]
        spec["model"]["vocab"].pop("[MASK]")
        tokenizer = str(tmp_path / "no-mask.json")
        Path(tokenizer).write_text(json.dumps(spec))
    code, out, err = run_cli(capsys, "preprocess", "--input", inputs, "--output", str(root), "--tokenizer", tokenizer,
                             "--overwrite")
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("mlm-data error: ") and expected in line
    assert_intact(root, before)


def test_a_run_failing_midway_leaves_exactly_the_old_dataset(old, tmp_path, small_corpus, preprocess, capsys):
    root, before = old
    corpus = write_corpus(tmp_path / "with-binary", [["a first document.\n\nIt has two paragraphs."]])
    with gzip.open(small_corpus / "b.txt.gz", "rb") as f:
        (corpus / "b.txt").write_bytes(f.read())
    (corpus / "c.bin.txt").write_bytes(bytes(range(256)) * 64)   # binary: input.on_bad_file is "fail"
    code, out, err = run_cli(capsys, "preprocess", "--input", str(corpus), "--output", str(root), "--tokenizer",
                             str(TOKENIZER), "--overwrite", "--set", "output.num_buckets=3")
    assert code == 2
    assert "c.bin.txt" in [line for line in err.splitlines() if line.startswith("mlm-data error:")][0]
    assert_intact(root, before)   # no new shards, no new tokenizer, no lease: the old dataset, byte for byte


def test_the_old_dataset_stays_valid_until_the_new_one_replaces_it(old, small_corpus, preprocess, monkeypatch):
    root, before = old
    real_publish_file = storage.publish_file
    checked = []

    def check_old_then_publish(local_path, url):
        real_publish_file(local_path, url)
        assert files(root).items() >= before.items()   # the old files, unchanged, next to the new ones
        assert verify(Manifest.load(str(root))).ok
        checked.append(os.path.relpath(url, root))

    monkeypatch.setattr(storage, "publish_file", check_old_then_publish)
    manifest = preprocess(str(small_corpus), root, **{**KW, "output.num_buckets": 3, "output.overwrite": True})
    assert checked and set(checked) <= {s.path for s in manifest.shards}
    after = files(root)
    assert sorted(after) == sorted(["manifest.json", "run.json", manifest.tokenizer["path"],
                                   *(s.path for s in manifest.shards)])
    assert verify(manifest).ok
    # Same input, tokenizer and config: the same names and bytes, wherever and whenever written.
    monkeypatch.setattr(storage, "publish_file", real_publish_file)
    assert preprocess(str(small_corpus), root.parent / "again", **{**KW, "output.num_buckets": 3}).data == manifest.data
    assert files(root.parent / "again") == after


def test_success_is_reported_only_for_this_runs_manifest(old):
    root, _ = old
    manifest = Manifest.load(str(root))
    with WriterLease(str(root), command="test") as lease:
        output = Output(str(root), lease)
        assert output.published(config=manifest.data["config"], tokenizer_sha256=manifest.tokenizer["sha256"]) \
            .data == manifest.data
        with pytest.raises(OutputBusyError, match="the manifest there is not the one this run wrote"):
            output.published(config={**manifest.data["config"], "seed": -1},
                             tokenizer_sha256=manifest.tokenizer["sha256"])


def test_discarding_a_failed_run_keeps_what_the_manifest_lists_and_the_lease(old):
    root, before = old
    (root / "train" / "shard-00009-000-0123456789abcdef.arrow").write_bytes(b"from a failed run")
    (root / "tokenizer-0123456789abcdef.json").write_bytes(b"{}")
    (root / ".writer-lease.json").write_bytes(b"{}")
    (root / "notes.txt").write_text("not ours")
    assert sorted(discard_unpublished(str(root))) == ["tokenizer-0123456789abcdef.json",
                                                      "train/shard-00009-000-0123456789abcdef.arrow"]
    assert files(root) == {**before, ".writer-lease.json": b"{}", "notes.txt": b"not ours"}
