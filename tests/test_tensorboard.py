"""TensorBoard event files hold what metrics.jsonl holds, also across an interrupted run."""

from __future__ import annotations

import os

import fsspec
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlm_data.errors import ConfigError
from trainer import cli, tensorboard_log
from trainer import train as train_module
from trainer.run_log import read_metrics

from conftest import REPO

TINY = ["--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--hidden-size", "32", "--num-heads", "2",
        "--intermediate-size", "64", "--batch-size", "8", "--warmup-steps", "2", "--log-every", "2",
        "--eval-batches", "2", "--max-steps", "8", "--save-every", "4", "--eval-every", "4"]


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_event_files_hold_the_logged_steps_even_after_a_resume(nsp, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_step = train_module.train_step

    def crash_in_step_7(*args, step, **kwargs):
        if step == 6:  # steps 5 and 6 are logged after the step-4 checkpoint, then it dies
            raise KeyboardInterrupt
        return real_step(*args, step=step, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_in_step_7)
    assert cli.main(["pretrain", *TINY, "--data", str(nsp), "--output", str(run)]) == 130
    monkeypatch.undo()
    assert cli.main(["pretrain", "--resume", str(run)]) == 0

    assert list(run.glob("events.out.tfevents.*"))  # beside metrics.jsonl
    board = scalars(run)
    records = read_metrics(str(run))
    for split in ("train", "validation"):
        logged = [r for r in records if r["split"] == split]
        keys = {k for r in logged for k in r} - {"step", "split"}
        assert {f"{split}/{k}" for k in keys} <= board.keys()
        for key in keys:
            # Every step once: the interrupted run's steps 5 and 6 were purged on resume.
            expected = [(r["step"], r[key]) for r in logged if key in r]
            assert [s for s, _ in board[f"{split}/{key}"]] == [s for s, _ in expected], key
            assert [v for _, v in board[f"{split}/{key}"]] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert [s for s, _ in board["train/loss"]] == [1, 2, 4, 6, 8]
    assert [s for s, _ in board["validation/mlm_loss"]] == [0, 4, 8]
    assert {"train/mlm_accuracy", "train/lr", "train/tokens_per_s", "train/grad_norm"} <= board.keys()


def test_event_files_reach_an_object_store_run_folder(nsp, tmp_path):
    fs = fsspec.filesystem("memory")
    run = f"memory://tb-{os.getpid()}-{tmp_path.name}/run"
    assert cli.main(["pretrain", *TINY, "--data", str(nsp), "--output", run, "--max-steps", "2"]) == 0
    local = tmp_path / "copy"
    fs.get(run.removeprefix("memory://") + "/", str(local), recursive=True)
    assert [s for s, _ in scalars(local)["train/loss"]] == [1, 2]


def test_tensorboard_off_writes_no_events_and_on_needs_the_package(nsp, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert cli.main(["pretrain", *TINY, "--data", str(nsp), "--output", str(run), "--max-steps", "2",
                     "--set", "train.tensorboard=false"]) == 0
    assert not list(run.glob("events.out.tfevents.*")) and read_metrics(str(run))
    monkeypatch.setattr(tensorboard_log.importlib.util, "find_spec", lambda name: None)
    assert tensorboard_log.wanted(None) is False
    with pytest.raises(ConfigError, match="tensorboard package is not installed"):
        tensorboard_log.wanted(True)
