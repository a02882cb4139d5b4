"""A run folder is never destroyed before the new run is known to start, and nothing in it or
in its dataset is trusted without a check: damaged checkpoints, a changed tokenizer.json, a
torn metrics.jsonl and the temporaries of killed writes, each met the way ``mlm-train`` is
used (``cli.main``), on a tiny model."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import fsspec
import pytest
import torch

from mlm_data.dataset.manifest import Manifest
from trainer import checkpoint, cli
from trainer.run_log import METRICS_NAME, read_metrics

from conftest import REPO

TINY = ["--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--hidden-size", "32",
        "--num-heads", "2", "--intermediate-size", "64", "--batch-size", "8", "--warmup-steps", "1",
        "--log-every", "1", "--eval-batches", "2", "--eval-every", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, preprocess) -> str:
    out = tmp_path_factory.mktemp("safety-data") / "bert"
    preprocess(str(small_corpus), out, instances__max_seq_length=64, output__validation_fraction=0.1,
               output__num_buckets=3)
    return str(out)


@pytest.fixture(scope="module")
def trained(dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with checkpoints at steps 2 and 4, to copy and harm."""
    run = tmp_path_factory.mktemp("safety-run") / "run"
    assert pretrain("--data", dataset, "--output", str(run), "--max-steps", "4", "--save-every", "2") == 0
    return run


def pretrain(*argv: str) -> int:
    return cli.main(["pretrain", *TINY, *argv])


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# ---- 2. --overwrite removes the old checkpoints only once the new run can start


@pytest.mark.parametrize("where", ["local", "memory"])
def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(trained, dataset, tmp_path, capsys, where):
    if where == "local":
        run = str(copy_run(trained, tmp_path))
    else:
        run = f"memory://overwrite-{os.getpid()}-{tmp_path.name}/run"
        fsspec.filesystem("memory").put(str(trained), run.removeprefix("memory://"), recursive=True)
    before = checkpoint.list_checkpoints(run)
    assert [s for s, _ in before] == [2, 4]
    for wrong in (["--data", str(tmp_path / "no-such-dataset")], ["--data", dataset, "--init", str(tmp_path / "nope")],
                  ["--data", dataset, "--eval-data", str(tmp_path / "no-eval")]):
        assert pretrain(*wrong, "--output", run, "--max-steps", "2", "--overwrite") == 2
        assert error_line(capsys).startswith("mlm-train error: ")
        assert checkpoint.list_checkpoints(run) == before  # all still there
    assert checkpoint.resume_point(run)["step"] == 4
    # A new run that starts replaces them.
    assert pretrain("--data", dataset, "--output", run, "--max-steps", "1", "--overwrite") == 0
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [1]


# ---- 4. + 12. --resume checks every checkpoint and cleans up after killed writes


def test_resume_falls_back_past_a_damaged_checkpoint_and_removes_killed_writes(trained, tmp_path, caplog):
    run = copy_run(trained, tmp_path)
    newest = run / "checkpoints" / "step-00000004.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or an interrupted copy
    killed = run / "checkpoints" / ".tmp-5e1f00d5-step-00000006.pt"
    killed.write_bytes(data[:1000])  # as a kill in the middle of writing the next one leaves it
    with caplog.at_level(logging.WARNING):
        assert cli.main(["pretrain", "--resume", str(run), "--max-steps", "5"]) == 0
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert notes[0] == f"{run}: removed {killed.name}, left by a checkpoint write that was killed"
    assert notes[1].startswith(f"{newest}: truncated or damaged: not a complete checkpoint archive")
    assert notes[2] == f"{run}: resuming from step-00000002.pt, the newest intact checkpoint"
    assert not killed.exists()
    assert [r["step"] for r in read_metrics(str(run)) if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert checkpoint.resume_point(str(run))["step"] == 5


def test_a_checkpoint_that_would_run_code_is_named_and_skipped(trained, tmp_path, caplog):
    run = copy_run(trained, tmp_path)

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    torch.save({"format": "mlm-train-checkpoint", "model": RunsCode()}, run / "checkpoints" / "step-00000006.pt")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["pretrain", "--resume", str(run)]) == 0  # already at step 4: nothing to do
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert notes[0] == (f"{run}/checkpoints/step-00000006.pt: unsupported global posix.system: this file is not a "
                        "checkpoint written by mlm-train; refusing to load it")
    assert not any("weights_only" in n for n in notes)


# ---- 5. a dataset's or a run's tokenizer.json must be the one that was recorded


def tamper(path: Path) -> None:
    """The same tokenizer with one token renamed: still a valid file, other ids' meaning."""
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    victim = next(t for t in vocab if t.isalpha() and len(t) > 3)
    vocab[victim.upper() + "X"] = vocab.pop(victim)
    path.write_text(json.dumps(data))


def test_a_changed_dataset_tokenizer_is_refused_before_anything_is_written(dataset, tmp_path, capsys):
    changed = tmp_path / "data"
    shutil.copytree(dataset, changed)
    tokenizer = Manifest.load(str(changed)).tokenizer["path"]
    tamper(changed / tokenizer)
    run = tmp_path / "run"
    assert pretrain("--data", str(changed), "--output", str(run), "--max-steps", "1") == 2
    line = error_line(capsys)
    assert line.startswith(f"mlm-train error: {changed}/{tokenizer}: tokenizer checksum mismatch (sha256 ")
    assert f"the manifest of {changed} says" in line and "re-create the dataset" in line
    assert not run.exists()


def test_export_refuses_a_run_whose_tokenizer_changed(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    assert cli.main(["export", "--ckpt", str(run), "--output", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    tamper(run / "tokenizer.json")
    assert cli.main(["export", "--ckpt", str(run), "--output", str(tmp_path / "hf2")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"mlm-train error: {run}/tokenizer.json: tokenizer checksum mismatch")
    assert "the checkpoint says" in line
    assert not (tmp_path / "hf2").exists()


# ---- 9. a torn last line of metrics.jsonl


def test_resume_ignores_a_torn_last_metrics_line_with_a_notice(trained, tmp_path, caplog):
    run = copy_run(trained, tmp_path)
    metrics = run / METRICS_NAME
    whole = metrics.read_bytes()
    metrics.write_bytes(whole + b'{"step": 5, "split": "tra')  # power lost mid-append
    with caplog.at_level(logging.WARNING):
        assert cli.main(["pretrain", "--resume", str(run), "--max-steps", "5"]) == 0
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    last = len(whole.splitlines()) + 1
    assert notes == [f"{metrics}: ignoring its incomplete last line (line {last}, 25 bytes), cut short when the "
                     "run stopped"]
    assert [r["step"] for r in read_metrics(str(run)) if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert metrics.read_bytes().startswith(whole) and metrics.read_bytes().endswith(b"}\n")


def test_resume_refuses_metrics_damaged_before_the_last_line(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    metrics = run / METRICS_NAME
    lines = metrics.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:10] + b"\n"
    metrics.write_bytes(b"".join(lines))
    assert cli.main(["pretrain", "--resume", str(run), "--max-steps", "5"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"mlm-train error: {metrics}: line 2 is damaged (")
    assert "move the file aside to start the log afresh" in line


# ---- resuming on data made otherwise: the same "made alike" check as mixing and --eval-data


def test_resume_on_a_dataset_made_with_another_tokenizer_is_refused_in_dataset_terms(trained, dataset, tmp_path,
                                                                                    capsys):
    run = copy_run(trained, tmp_path)
    other = tmp_path / "retokenized"
    shutil.copytree(dataset, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["pretrain", "--resume", str(run), "--data", str(other), "--max-steps", "6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlm-train error: cannot resume on these datasets: they are not made like the data the "
                          "checkpoint was trained on")
    assert f"  - {other} was tokenized with sha256 000000000000…, the training data of {run} with " in err
