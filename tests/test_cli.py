"""The mlm-data command line as a user meets it: documented commands, one-line errors, exit codes."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main

from conftest import TOKENIZER


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, small_corpus):
    out = tmp_path_factory.mktemp("cli") / "ds"
    code = main(["preprocess", "--input", str(small_corpus), "--output", str(out), "--tokenizer", str(TOKENIZER),
                 "--set", "output.num_buckets=2", "--set", "output.validation_fraction=0.1",
                 "--runner", "DirectRunner"])
    assert code == 0
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return err[-1]


def test_preprocess_prints_the_summary(dataset, capsys):
    assert main(["inspect", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "task      mlm_nsp" in out and "documents read 60, written 60" in out and "segment_a:" in out


def test_inspect_json_and_plots(dataset, tmp_path, capsys):
    assert main(["inspect", str(dataset), "--json", "--plot", str(tmp_path / "plots")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["documents_read"] == 60
    assert set(summary["splits"]) == {"train", "validation"}
    assert {p.split("/")[-1] for p in summary["plots"]} >= {"sequence_length.png", "tokens_per_document.png",
                                                             "segment_a_length.png", "segment_b_length.png"}
    assert all((tmp_path / "plots" / p.split("/")[-1]).stat().st_size > 1000 for p in summary["plots"])


def test_verify_passes_then_fails_on_a_flipped_byte(dataset, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    assert main(["verify", str(copy), "--quiet"]) == 0
    shard = sorted((copy / "train").glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {copy}/train/{shard.name}: shard checksum mismatch" in out


@pytest.mark.parametrize("argv,message", [
    (["preprocess", "--input", "nowhere/*.txt", "--output", "{tmp}/o"], "input pattern 'nowhere/*.txt' matched no files"),
    (["preprocess", "--input", "{corpus}", "--output", "{tmp}/o", "--tokenizer", "{corpus}/a.txt"],
     "a.txt: not a tokenizer file"),
    (["preprocess", "--input", "{corpus}", "--output", "{tmp}/o", "--set", "instances.max_seq_lenth=12"],
     "instances.max_seq_lenth: unknown key; did you mean 'max_seq_length'?"),
    (["inspect", "{tmp}"], "not a dataset (no manifest.json)"),
    (["verify", "{tmp}"], "not a dataset (no manifest.json)"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, small_corpus, capsys):
    argv = [a.format(tmp=tmp_path, corpus=small_corpus) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_train_tokenizer_is_deterministic(tmp_path, small_corpus, capsys):
    for name in ("a.json", "b.json"):
        assert main(["train-tokenizer", "--input", str(small_corpus), "--output", str(tmp_path / name),
                     "--vocab-size", "500"]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "a.json"))
    assert tok.get_vocab_size() <= 500 and tok.token_to_id("[MASK]") is not None
