"""Checkpoints: weights_only round trips, atomic publication, keep-last-N, clear refusals."""

from __future__ import annotations

import io
import os

import fsspec
import pytest
import torch

from mlm_data.config.loading import to_dict
from trainer import checkpoint
from trainer.checkpoint import CheckpointError
from trainer.config import ModelConfig, PretrainConfig, TrainConfig
from trainer.models.encoder import BertForPreTraining
from trainer.optim import build_optimizer

LOADER_STATE = {"format": "mlm-data/loader-state", "version": 1, "epoch": 2, "position": 64,
                "masking": {"probability": 0.15}, "sources": [{"path": "out/bert", "weight": 1.0}]}


def trained_state(step: int = 3) -> dict:
    torch.manual_seed(0)
    cfg = PretrainConfig(model=ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                           intermediate_size=32, max_position_embeddings=8, nsp_head=True),
                         train=TrainConfig(lr=1e-3))
    model = BertForPreTraining(cfg.model)
    opt = build_optimizer(model, cfg.train, device=torch.device("cpu"))
    ids = torch.randint(5, 50, (2, 8))
    model(ids, labels=ids, next_sentence_label=torch.tensor([0, 1])).loss.backward()
    opt.step()
    return checkpoint.build_state(step=step, model=model, optimizer=opt, loader=LOADER_STATE, config=to_dict(cfg))


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip_with_weights_only(tmp_path, where):
    run = str(tmp_path / "run") if where == "local" else f"memory://ckpt-{os.getpid()}/run"
    state = trained_state()
    url = checkpoint.save(run, state, keep_last=2)
    assert url == f"{run}/checkpoints/step-00000003.pt"
    loaded = checkpoint.load_latest(run)
    assert_same(loaded, state)
    assert loaded["optimizer"]["state"]  # Adam moments made it
    # The file is loadable by plain torch with the safe unpickler, no trainer code involved.
    with fsspec.open(url, "rb") as f:
        raw = torch.load(io.BytesIO(f.read()), weights_only=True)
    assert raw["format"] == "mlm-train-checkpoint" and raw["format_version"] == 1
    # Restoring reproduces the model and keeps the decoder tied to the embeddings.
    model = BertForPreTraining(ModelConfig(**loaded["config"]["model"]))
    model.load_state_dict(loaded["model"])
    assert model.mlm_head.decoder.weight is model.encoder.embeddings.word.weight


def test_keep_last_deletes_only_older_checkpoints(tmp_path):
    run = str(tmp_path / "run")
    state = trained_state()
    for step in (10, 20, 30, 40, 50):
        checkpoint.save(run, {**state, "step": step}, keep_last=2)
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [40, 50]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-00000040.pt", "step-00000050.pt"]


def test_a_failed_write_leaves_the_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    state = trained_state()
    checkpoint.save(run, {**state, "step": 10}, keep_last=1)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(run, {**state, "step": 20}, keep_last=1)
    monkeypatch.undo()
    # Nothing half-written under a checkpoint name, the old one was not pruned, and a stray
    # temporary file (as a killed process would leave) is never taken for a checkpoint.
    (tmp_path / "run" / "checkpoints" / ".tmp-0123abcd-step-00000030.pt").write_bytes(b"partial")
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [10]
    assert checkpoint.load_latest(run)["step"] == 10


def test_refuses_what_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(str(path))
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an mlm-train-checkpoint file"):
        checkpoint.load(str(path))
    torch.save({**trained_state(), "format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99 is not supported.*reads 1"):
        checkpoint.load(str(path))
    # Arbitrary pickled objects are refused by the weights_only unpickler, not executed.
    torch.save({"format": "mlm-train-checkpoint", "payload": Exception("boom")}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(str(path))
    with pytest.raises(CheckpointError, match="no checkpoints to resume from"):
        checkpoint.load_latest(str(tmp_path / "empty-run"))
