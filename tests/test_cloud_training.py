"""The whole path on an object store: preprocess to s3:// (gs://), verify there, train
streaming from it with checkpoints to it, die mid-run, and resume from that checkpoint exactly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

import pipelines.cli
from trainer import checkpoint
from trainer import cli as train_cli
from trainer import train as train_module
from trainer.config import ModelConfig, TrainConfig
from trainer.models.encoder import BertForPreTraining
from trainer.optim import build_optimizer
from trainer.run_log import read_metrics

from conftest import REPO

if TYPE_CHECKING:
    from servers import ObjectStore

pytest_plugins = ["servers"]

TINY = ["--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--hidden-size", "32", "--num-heads", "2",
        "--intermediate-size", "64", "--batch-size", "8", "--warmup-steps", "2", "--log-every", "1",
        "--eval-batches", "2", "--dropout", "0.1"]


def upload(store: ObjectStore, corpus: Path, prefix: str) -> str:
    for path in sorted(corpus.iterdir()):
        store.put(f"{prefix}/{path.name}", path.read_bytes())
    return store.url(prefix)


@pytest.mark.parametrize("scheme", ["s3", "gcs"])
def test_preprocess_verify_train_die_and_resume_on_a_store(scheme, request, small_corpus, preprocess, monkeypatch):
    store = request.getfixturevalue(scheme)
    data = store.url("datasets/bert")
    preprocess(upload(store, small_corpus, "corpus"), data, instances__max_seq_length=64,
               output__validation_fraction=0.1, output__num_buckets=3)
    assert pipelines.cli.main(["verify", data, "--quiet"]) == 0

    common = [*TINY, "--data", data, "--max-steps", "8", "--save-every", "4", "--eval-every", "4"]
    straight, interrupted = store.url("runs/straight"), store.url("runs/interrupted")
    assert train_cli.main(["pretrain", *common, "--output", straight]) == 0

    real_step = train_module.train_step

    def die_in_step_7(*args, step, **kwargs):
        if step == 6:
            raise KeyboardInterrupt
        return real_step(*args, step=step, **kwargs)

    with monkeypatch.context() as patch:  # undoing the whole fixture would drop the store's environment too
        patch.setattr(train_module, "train_step", die_in_step_7)
        assert train_cli.main(["pretrain", *common, "--output", interrupted]) == 130
    assert store.keys("runs/interrupted/checkpoints") == ["step-00000004.pt"]
    assert train_cli.main(["pretrain", "--resume", interrupted]) == 0

    def comparable(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run)]

    assert comparable(interrupted) == comparable(straight)
    a, b = checkpoint.load_latest(straight), checkpoint.load_latest(interrupted)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.parametrize("scheme", ["s3", "gcs"])
def test_overwrite_with_a_wrong_data_keeps_the_run_on_a_store(scheme, request, capsys):
    """The old run's checkpoints go only once the new run can start (issue: a mistyped --data
    used to delete them and then fail)."""
    store = request.getfixturevalue(scheme)
    run = store.url("runs/kept")
    model = BertForPreTraining(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                           intermediate_size=32, max_position_embeddings=8, nsp_head=True))
    optimizer = build_optimizer(model, TrainConfig(), device=torch.device("cpu"))
    state = checkpoint.build_state(step=3, model=model, optimizer=optimizer, loader={}, config={})
    checkpoint.save(run, state, keep_last=1)
    assert train_cli.main(["pretrain", *TINY, "--data", store.url("datasets/typo"), "--output", run,
                           "--overwrite"]) == 2
    assert f"{store.url('datasets/typo')}: does not exist" in capsys.readouterr().err
    assert store.keys("runs/kept/checkpoints") == ["step-00000003.pt"]
    assert checkpoint.resume_point(run)["step"] == 3
