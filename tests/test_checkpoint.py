"""Checkpoints: weights_only round trips, atomic publication, keep-last-N, clear refusals."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import zipfile

import fsspec
import pytest
import torch

from mlm_data.config.loading import to_dict
from trainer import checkpoint
from trainer.checkpoint import CheckpointError, DamagedCheckpoint
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
    assert loaded.pop("sha256") == checkpoint.content_sha256(state)  # the checksum travels inside
    assert_same(loaded, state)
    assert loaded["optimizer"]["state"]  # Adam moments made it
    # The file is loadable by plain torch with the safe unpickler, no trainer code involved.
    with fsspec.open(url, "rb") as f:
        raw = torch.load(io.BytesIO(f.read()), weights_only=True)
    assert raw["format"] == "mlm-train-checkpoint" and raw["format_version"] == 2
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
    with pytest.raises(DamagedCheckpoint, match="holds data the safe unpickler does not read.*this file is not a "
                                                "checkpoint written by mlm-train; refusing to load it"):
        checkpoint.load(str(path))
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DamagedCheckpoint, match="not an mlm-train-checkpoint file"):
        checkpoint.load(str(path))
    torch.save({**trained_state(), "format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99 is not supported.*reads 1, 2"):
        checkpoint.load(str(path))
    with pytest.raises(CheckpointError, match="no checkpoints to resume from"):
        checkpoint.load_latest(str(tmp_path / "empty-run"))


class RunsCode:
    """What a hostile .pt pickles: a call of ``os.system`` at load time."""

    def __reduce__(self):
        return (os.system, ("echo should never run",))


@pytest.mark.parametrize(("payload", "name"), [(RunsCode(), r"posix\.system"), (Exception("boom"), r"\w+\.Exception")])
def test_a_file_that_would_run_code_is_refused_in_our_words(tmp_path, payload, name):
    path = tmp_path / "step-00000001.pt"
    torch.save({"format": "mlm-train-checkpoint", "payload": payload}, path)
    with pytest.raises(DamagedCheckpoint) as e:
        checkpoint.load(str(path))
    message = str(e.value)
    assert re.fullmatch(rf"mlm-data error: {re.escape(str(path))}: unsupported global {name}: this file is not a "
                        "checkpoint written by mlm-train; refusing to load it", message)
    assert "weights_only" not in message and "will likely succeed" not in message


def flip_bit_in_tensor_data(path) -> None:
    """Flip one bit inside the largest tensor's bytes (the zip entry holding the most data)."""
    with zipfile.ZipFile(path) as z:
        entry = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    header = entry.header_offset
    start = header + 30 + int.from_bytes(raw[header + 26:header + 28], "little") + \
        int.from_bytes(raw[header + 28:header + 30], "little")
    raw[start + entry.file_size // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_is_refused_not_loaded(tmp_path):
    run = tmp_path / "run"
    state = trained_state()
    url = checkpoint.save(str(run), state, keep_last=1)
    flip_bit_in_tensor_data(run / "checkpoints" / "step-00000003.pt")
    plain = torch.load(url, weights_only=True)  # torch alone would take it...
    assert any(not torch.equal(plain["model"][k], v) for k, v in state["model"].items())
    with pytest.raises(DamagedCheckpoint, match="checksum mismatch .*: the file changed after it was written"):
        checkpoint.load(url)  # ...we do not


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint_and_says_so(tmp_path, damage, caplog):
    run = tmp_path / "run"
    state = trained_state()
    for step in (10, 20):
        checkpoint.save(str(run), {**state, "step": step}, keep_last=3)
    newest = run / "checkpoints" / "step-00000020.pt"
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size * 2 // 3])
    else:
        flip_bit_in_tensor_data(newest)
    with caplog.at_level(logging.WARNING):
        resumed = checkpoint.resume_point(str(run))
    assert resumed["step"] == 10
    lines = [r.getMessage() for r in caplog.records]
    reason = "checksum mismatch" if damage == "flipped bit" else "truncated or damaged"
    assert len(lines) == 2 and lines[0].startswith(f"{newest}: {reason}")
    assert lines[1] == f"{run}: resuming from step-00000010.pt, the newest intact checkpoint"
    # Saving the resumed run's next checkpoint prunes older ones only, never the new one.
    checkpoint.save(str(run), {**state, "step": 15}, keep_last=1)
    assert [s for s, _ in checkpoint.list_checkpoints(str(run))] == [15, 20]
    assert checkpoint.resume_point(str(run))["step"] == 15


def test_resume_refuses_when_no_checkpoint_is_intact(tmp_path):
    run = tmp_path / "run"
    checkpoint.save(str(run), trained_state(), keep_last=1)
    (run / "checkpoints" / "step-00000003.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(CheckpointError, match="none of its 1 checkpoint\\(s\\) is intact"):
        checkpoint.resume_point(str(run))


def test_checkpoints_without_a_checksum_load_with_a_notice(tmp_path, caplog):
    """Format 1 files (before checksums) stay readable: refusing would strand every earlier run."""
    path = tmp_path / "step-00000003.pt"
    old = {**trained_state(), "format_version": 1}
    torch.save(old, path)
    with caplog.at_level(logging.WARNING):
        loaded = checkpoint.load(str(path))
    assert_same(loaded, old)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: written before checkpoints carried a checksum (format 1); loaded unverified"]


def test_resume_removes_temporaries_of_killed_writes_but_not_a_live_one(tmp_path, caplog):
    run = tmp_path / "run"
    checkpoint.save(str(run), trained_state(), keep_last=1)
    folder = run / "checkpoints"
    dead = folder / ".tmp-0123abcd-step-00000004.pt"
    dead.write_bytes(b"half a checkpoint")
    live = folder / ".tmp-4567cdef-step-00000005.pt"
    with open(live, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as storage.write_bytes holds it while writing
        f.write(b"being written")
        with caplog.at_level(logging.WARNING):
            assert checkpoint.resume_point(str(run))["step"] == 3
    assert not dead.exists() and live.exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"{run}: removed {dead.name}, left by a checkpoint write that was killed"]
