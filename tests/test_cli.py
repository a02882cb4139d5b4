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


@pytest.mark.parametrize("typo,meant", [("--confg", "--config"), ("--toknizer", "--tokenizer"),
                                        ("--overwite", "--overwrite"), ("--runer", "--runner"),
                                        ("--instances.max-seq-lenght", "--instances.max-seq-length")])
def test_a_mistyped_flag_is_refused_before_anything_is_written(typo, meant, tmp_path, small_corpus, capsys):
    argv = ["preprocess", "--input", str(small_corpus), "--output", str(tmp_path / "o"), typo, "x.yaml"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mlm-data error: unknown flag {typo}; did you mean {meant}? (see `mlm-data preprocess --help`)"]
    assert not (tmp_path / "o").exists()


def test_an_abbreviated_flag_is_not_taken_for_the_long_one(tmp_path, small_corpus, capsys):
    with pytest.raises(SystemExit):
        main(["preprocess", "--input", str(small_corpus), "--out", str(tmp_path / "o"), "--direct_num", "2"])
    assert capsys.readouterr().err.startswith("mlm-data error: unknown flags --out (did you mean --output?), "
                                              "--direct_num (did you mean --direct_num_workers?)")


def test_every_beam_option_class_is_known():
    from pipelines.runner import unknown_to_beam

    beam_args = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode=multi_processing",
                 "--project", "p", "--region=europe-west4", "--temp_location", "gs://b/tmp",
                 "--setup_file=./setup.py", "--num_workers", "4", "--max_num_workers=8", "--worker_machine_type",
                 "n2-standard-4", "--experiments=use_runner_v2", "--save_main_session",
                 "--s3_endpoint_url", "http://127.0.0.1:9000", "--environment_type=LOOPBACK", "--job_endpoint",
                 "localhost:8099", "--pickle_library=cloudpickle", "--profile_cpu"]
    unknown, flags = unknown_to_beam(beam_args)
    assert unknown == []
    assert {"--runner", "--project", "--num_workers", "--s3_endpoint_url", "--job_endpoint"} <= set(flags)
    assert unknown_to_beam(["--runner", "DirectRunner", "--toknizer", "t.json"])[0] == ["--toknizer", "t.json"]


def test_beam_flags_pass_through_to_a_run(tmp_path, capsys):
    from conftest import demo_documents, write_corpus

    corpus = write_corpus(tmp_path / "c", [demo_documents(8)])
    assert main(["preprocess", "--input", str(corpus), "--output", str(tmp_path / "o"), "--tokenizer", str(TOKENIZER),
                 "--runner", "DirectRunner", "--direct_num_workers=1", "--project", "unused", "--temp_location",
                 str(tmp_path / "beam-temp"), "--instances.max-seq-length", "64", "--overwrite"]) == 0
    assert (tmp_path / "o" / "manifest.json").exists()
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["max_seq_length"] == 64


def test_preprocess_help_lists_every_field_by_section(capsys):
    with pytest.raises(SystemExit):
        main(["preprocess", "--help"])
    out = capsys.readouterr().out
    for text in ("instances (what rows to build):", "--instances.max-seq-length INT", "--tokenizer JSON",
                 "--overwrite [true|false]", "--output.validation-fraction FLOAT", "--filters."):
        assert text in out


@pytest.mark.parametrize("argv,message", [
    (["preprocess", "--input", "{corpus}", "--output", "{tmp}/o", "--tokenizer", "bert-base-uncased"],
     "mlm-data error: bert-base-uncased: tokenizer file not found; hub names are not fetched (no network at run "
     "time): on a machine with network run python -c \"from tokenizers import Tokenizer; "
     "Tokenizer.from_pretrained('bert-base-uncased').save('tokenizer.json')\" or take the tokenizer.json shipped "
     "with the model, and pass its path"),
    (["inspect", "{tmp}/nowhere"], "mlm-data error: {tmp}/nowhere: does not exist; check the path"),
    (["verify", "{tmp}/nowhere"], "mlm-data error: {tmp}/nowhere: does not exist; check the path"),
    (["train-tokenizer", "--input", "{corpus}", "--output", "{tmp}/t.json", "--vocab-size", "many"],
     "mlm-data error: argument --vocab-size: invalid int value: 'many'"),
    (["preprocess", "--input", "{corpus}", "--output", "{tmp}/o", "--direct_running_mode=multi_process"],
     "mlm-data error: argument --direct_running_mode: invalid choice: 'multi_process'"),
    (["preprocess", "--input", "{corpus}", "--output", "{tmp}/o", "--direct_num_workers"],
     "mlm-data error: argument --direct_num_workers: expected one argument"),
])
def test_the_one_line_says_what_to_do(argv, message, tmp_path, small_corpus, capsys):
    argv = [a.format(tmp=tmp_path, corpus=small_corpus) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # a usage error, from argparse
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(tmp=tmp_path))


def test_ctrl_c_on_a_remote_runner_says_the_job_may_go_on():
    from pipelines.cli import INTERRUPTED, interrupted_message

    assert interrupted_message(["--direct_running_mode=multi_processing"]) == INTERRUPTED
    assert interrupted_message(["--runner", "DataflowRunner", "--project", "p"]).startswith(
        "interrupted; no manifest was written yet, but a job DataflowRunner already received keeps running")
