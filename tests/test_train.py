"""End-to-end training on a small real dataset: learning, exact resume, DDP, URLs, failures.

Every run goes through ``mlm-train``'s ``main`` in-process, with a 2-layer, 32-wide model
on 64-token rows of the bundled corpus, so each run takes a second or two.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import fsspec
import pytest
import torch
import yaml

from mlm_data.config.loading import from_dict, to_dict
from trainer import checkpoint, cli
from trainer import train as train_module
from trainer.config import ModelConfig, PretrainConfig
from trainer.models.encoder import BertForPreTraining
from trainer.run_log import read_metrics

from conftest import REPO

# Dropout on, so that exact resume also covers the per-step dropout seeds.
TINY = ["--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--hidden-size", "32",
        "--num-heads", "2", "--intermediate-size", "64", "--batch-size", "8", "--warmup-steps", "2",
        "--log-every", "1", "--eval-batches", "3", "--dropout", "0.1", "--attention-dropout", "0.1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, preprocess) -> str:
    """60 documentation pages as 64-token NSP pairs: ~1,500 train rows, a validation split."""
    out = tmp_path_factory.mktemp("train-data") / "bert"
    preprocess(str(small_corpus), out, instances__max_seq_length=64, output__validation_fraction=0.1,
               output__num_buckets=3)
    return str(out)


def pretrain(*argv: str) -> int:
    return cli.main(["pretrain", *TINY, *argv])


def comparable(records: list[dict]) -> list[dict]:
    """Metrics without wall-clock figures."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_loss_falls_and_the_run_folder_is_complete(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain("--data", dataset, "--output", str(run), "--max-steps", "40", "--lr", "3e-3",
                    "--log-every", "5", "--eval-every", "20", "--eval-batches", "6") == 0
    err = capsys.readouterr().err
    records = read_metrics(str(run))
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "validation"]
    assert [r["step"] for r in train] == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["step"] for r in evals] == [0, 20, 40]
    # Learning: from the uniform guess (ln 2000 = 7.6 nats) well down, on held-out data too.
    assert train[0]["mlm_loss"] > 7.3
    # 40 steps take 0.9-1.3 nats off, depending on the rows (measured over four preprocessing
    # seeds, before and after instances_version 2); this dataset's seed sits at the low end.
    assert sum(r["mlm_loss"] for r in train[-3:]) / 3 < train[0]["mlm_loss"] - 0.8
    assert evals[0]["mlm_loss"] > 7.3 and evals[-1]["mlm_loss"] < evals[1]["mlm_loss"] < evals[0]["mlm_loss"] - 0.5
    assert evals[-1]["mlm_accuracy"] > evals[0]["mlm_accuracy"]
    for r in train:
        assert {"step", "split", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "lr", "grad_norm",
                "tokens_per_s", "epoch"} <= r.keys()
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["nsp_loss"], rel=1e-5)
        assert r["tokens_per_s"] > 0 and 0 <= r["mlm_accuracy"] <= 1
    for r in evals:
        assert {"loss", "mlm_loss", "perplexity", "mlm_accuracy", "unigram_accuracy", "nsp_loss",
                "nsp_accuracy", "predictions"} <= r.keys()
        assert r["perplexity"] == pytest.approx(2.718281828 ** r["mlm_loss"], rel=1e-6)
        assert 0 < r["unigram_accuracy"] < 0.5 and r["predictions"] > 100
    # The resolved config reloads into the same config, with what only the dataset knew.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    cfg = from_dict(PretrainConfig, saved, source="config.yaml")
    assert cfg.model.vocab_size == 2000 and cfg.model.nsp_head is True and cfg.train.max_steps == 40
    assert to_dict(cfg) == checkpoint.load_latest(str(run))["config"]
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s for s, _ in checkpoint.list_checkpoints(str(run))] == [40]
    assert "eval validation @ step 40" in err and "done: steps 0→40" in err
    summary = err.splitlines()[-2]  # before "wrote RUN/metrics.png"
    assert summary.startswith("  validation mlm_loss ") and "(step 0) →" in summary and "unigram baseline" in summary


def test_an_interrupted_run_resumes_exactly_with_another_worker_count(dataset, tmp_path, monkeypatch):
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    common = ["--data", dataset, "--max-steps", "12", "--save-every", "6", "--eval-every", "6"]
    assert pretrain(*common, "--output", straight) == 0

    real_step = train_module.train_step

    def crash_in_step_9(*args, step, **kwargs):
        if step == 8:  # 0-based: steps 7 and 8 are logged after the step-6 checkpoint, then it dies
            raise KeyboardInterrupt
        return real_step(*args, step=step, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_in_step_9)
    assert pretrain(*common, "--output", interrupted) == 130
    assert [r["step"] for r in read_metrics(interrupted)][-2:] == [7, 8]
    monkeypatch.undo()
    assert cli.main(["pretrain", "--resume", interrupted, "--num-workers", "2"]) == 0

    a, b = read_metrics(straight), read_metrics(interrupted)
    assert [(r["step"], r["split"]) for r in b] == [(r["step"], r["split"]) for r in a]
    assert comparable(b) == comparable(a)  # bit-identical losses, accuracies, grad norms
    final_a, final_b = checkpoint.load_latest(straight), checkpoint.load_latest(interrupted)
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    assert final_b["loader"] == final_a["loader"]
    assert final_b["config"]["data"]["num_workers"] == 2


def test_resume_extends_a_finished_run(dataset, tmp_path, capsys):
    run = str(tmp_path / "run")
    # A constant learning rate, so that the longer run's schedule is the same as the shorter's.
    constant = ["--data", dataset, "--lr", "1e-3", "--min-lr", "1e-3", "--warmup-steps", "0", "--eval-every", "0"]
    assert pretrain(*constant, "--output", run, "--max-steps", "6") == 0
    assert cli.main(["pretrain", "--resume", run]) == 0
    assert "already at step 6" in capsys.readouterr().err
    assert cli.main(["pretrain", "--resume", run, "--max-steps", "12"]) == 0
    straight = str(tmp_path / "straight")
    assert pretrain(*constant, "--output", straight, "--max-steps", "12") == 0
    train = [r for r in comparable(read_metrics(run)) if r["split"] == "train"]
    assert train == [r for r in comparable(read_metrics(straight)) if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))


def test_resume_refuses_a_changed_config_and_fresh_runs_need_overwrite_for_used_folders(dataset, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert pretrain("--data", dataset, "--output", run, "--max-steps", "2", "--eval-every", "0") == 0
    capsys.readouterr()
    assert cli.main(["pretrain", "--resume", run, "--lr", "5e-3", "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume with a different configuration" in err and "train.lr: the checkpoint has 0.0015" in err
    assert pretrain("--data", dataset, "--output", run, "--max-steps", "2") == 2
    assert "already holds checkpoints; continue it with --resume" in capsys.readouterr().err
    assert pretrain("--data", dataset, "--output", run, "--max-steps", "1", "--overwrite") == 0
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [1]
    assert [(r["step"], r["split"]) for r in read_metrics(run)] == [(0, "validation"), (1, "train"),
                                                                   (1, "validation")]


def test_a_diverging_run_stops_with_a_clear_message(dataset, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert pretrain("--data", dataset, "--output", run, "--max-steps", "20", "--lr", "1e30",
                    "--warmup-steps", "0", "--eval-every", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlm-train error: ") and "the loss is nan at step 2" in err[-1]
    assert "lower --lr" in err[-1]
    assert [r["step"] for r in read_metrics(run) if r["split"] == "train"] == [1, 2]  # on record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train_module.pretrain(from_dict(PretrainConfig, cfg, source="test"))
    torch.save({"model": result.model.state_dict(), "last": result.last}, f"{out}/rank{rank}.pt")


def test_two_process_gloo_ddp_ranks_stay_identical(dataset, tmp_path):
    import torch.multiprocessing as mp

    cfg = {
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
        "train": {"batch_size": 4, "max_steps": 4, "lr": 3e-3, "log_every": 2, "eval_every": 0,
                  "eval_batches": 2, "device": "cpu"},
        "data": {"sources": [dataset]},
        "output": str(tmp_path / "run"),
    }
    mp.start_processes(_ddp_rank, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, tensor in r0["model"].items():
        assert torch.equal(tensor, r1["model"][name]), name
    torch.manual_seed(1234)  # the initialisation seed: both ranks started here and moved together
    init = BertForPreTraining(ModelConfig(**cfg["model"], vocab_size=2000, nsp_head=True)).state_dict()
    assert not torch.equal(init["encoder.blocks.0.attn.qkv.weight"], r0["model"]["encoder.blocks.0.attn.qkv.weight"])
    assert comparable([r0["last"]]) == comparable([r1["last"]])  # metrics are all-reduced over ranks
    saved = checkpoint.load_latest(cfg["output"])
    assert saved["loader"]["world_size"] == 2 and saved["loader"]["batch_size"] == 4


def test_a_corrupted_shard_fails_with_one_line_naming_it(dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    shard = sorted((bad / "train").glob("*.arrow"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    for workers in ("0", "2"):
        assert pretrain("--data", str(bad), "--output", str(tmp_path / f"run{workers}"), "--max-steps", "30",
                        "--num-workers", workers) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert errors[0].startswith("mlm-train error: ") and shard.name in errors[0] and "checksum" in errors[0]


def test_data_and_run_folder_on_fsspec_urls(dataset, tmp_path):
    fs = fsspec.filesystem("memory")
    name = f"t{os.getpid()}-{tmp_path.name}"
    fs.put(dataset, f"/{name}/data", recursive=True)
    data, run = f"memory://{name}/data", f"memory://{name}/run"
    assert pretrain("--data", data, "--output", run, "--max-steps", "4", "--save-every", "2",
                    "--keep-last", "1", "--eval-every", "2") == 0
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [4]
    assert fs.exists(f"/{name}/run/config.yaml") and fs.exists(f"/{name}/run/metrics.png")
    assert [(r["step"], r["split"]) for r in read_metrics(run)] == [(0, "validation"), (1, "train"), (2, "train"),
                                                                   (2, "validation"), (3, "train"), (4, "train"),
                                                                   (4, "validation")]
    assert cli.main(["pretrain", "--resume", run, "--max-steps", "5"]) == 0
    assert [r["step"] for r in read_metrics(run)][-2:] == [5, 5]


def test_overrides_mixing_and_a_missing_eval_split(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["pretrain", "--config", TINY[1], "--hidden-size", "32", "--num-heads", "2",
                     "--intermediate-size", "64", "--data", f"{dataset}:3", "--data", f"{dataset}:1",
                     "--output", str(run), "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3",
                     "--warmup-steps", "0", "--log-every", "1", "--eval-split", "test"]) == 0
    err = capsys.readouterr().err
    assert err.count("no 'test' split") == 1 and "training without evaluation" in err
    records = read_metrics(str(run))
    assert [r["step"] for r in records] == [1, 2, 3] and {r["split"] for r in records} == {"train"}
    assert records[0]["lr"] == pytest.approx(1e-3)
    saved = checkpoint.load_latest(str(run))
    assert saved["config"]["train"]["batch_size"] == 4 and saved["loader"]["batch_size"] == 4
    assert [s["weight"] for s in saved["loader"]["sources"]] == [3.0, 1.0]


@pytest.mark.slow
def test_torchrun_cli_two_processes(dataset, tmp_path):
    import subprocess

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "trainer.cli", "pretrain", *TINY, "--data", dataset, "--output", str(run),
           "--max-steps", "4", "--eval-every", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "2 rank(s) on cpu" in proc.stderr
    assert checkpoint.load_latest(str(run))["loader"]["world_size"] == 2
