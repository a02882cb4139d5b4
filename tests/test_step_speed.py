"""The training step's speed options give the results of the plain step, on real loader batches.

Each option changes how a step computes, never what: the fixed-size prediction gather
(``train.sync_free``), unpadded encoding (``train.unpad``), static shapes and bf16 weights
with fp32 masters are checked here against the plain padded fp32 step on the CPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mlm_data.config.preprocess import MaskingConfig
from mlm_data.errors import ConfigError
from trainer import checkpoint, cli
from trainer.config import ModelConfig, PretrainConfig, TrainConfig, resolve_for_dataset
from trainer.loading.loader import DataSource, ShardLoader
from trainer.loading.options import LoaderOptions
from trainer.models.encoder import BertForPreTraining
from trainer.optim import build_optimizer
from trainer.precision import Precision
from trainer.run_log import read_metrics
from trainer.step_inputs import StepInputs, prediction_capacity
from trainer.train import step_figures, train_step

from conftest import REPO

CPU = torch.device("cpu")
# The CPU's math fallback of jagged attention warns about another nested layout (see unpadded.py).
pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")


def loader_batches(root, n: int, **options) -> list[dict[str, torch.Tensor]]:
    loader = ShardLoader([DataSource(str(root))], batch_size=8, seed=0, options=LoaderOptions(**options))
    try:
        return list(itertools.islice(iter(loader), n))
    finally:
        loader.close()


def tiny_model(vocab_size: int) -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(ModelConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                                          intermediate_size=64, dropout=0.0, attention_dropout=0.0, nsp_head=True))


def forward_backward(model, inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("option", ["sync_free", "unpad"])
def test_fast_layouts_give_the_padded_losses_figures_and_gradients(nsp, option):
    batches = loader_batches(nsp, 3)
    assert any(bool((b["attention_mask"] == 0).any()) for b in batches)  # there is padding to drop
    model = tiny_model(2000)
    plain, fast = StepInputs(CPU, masking=MaskingConfig()), StepInputs(CPU, masking=MaskingConfig(), **{option: True})
    for batch in batches:
        (a_in, a_tokens), (b_in, b_tokens) = plain(batch), fast(batch)
        assert a_tokens == b_tokens == int(batch["attention_mask"].sum())
        a, grads_a = forward_backward(model, a_in)
        b, grads_b = forward_backward(model, b_in)
        torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b.nsp_logits, a.nsp_logits, rtol=1e-5, atol=1e-6)
        for name, grad in grads_a.items():
            torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        fa, fb = step_figures(a), step_figures(b)
        torch.testing.assert_close(fb, fa, rtol=1e-5, atol=1e-6)  # loss, mlm, nsp, correct, count
        assert fb[4] == int((batch["labels"] != -100).sum())


def test_static_shapes_fix_every_tensor_and_keep_every_label(nsp):
    prepare = StepInputs(CPU, masking=MaskingConfig(), sync_free=True)
    capacity = prediction_capacity(8, 64, MaskingConfig())
    shapes = set()
    for batch in loader_batches(nsp, 12, pad_to_max_length=True):
        inputs, _ = prepare(batch)
        shapes.add(tuple((k, tuple(v.shape)) for k, v in sorted(inputs.items())))
        labelled = batch["labels"][batch["labels"] != -100]
        assert inputs["mlm_positions"].shape == (capacity,)
        kept = inputs["mlm_targets"][inputs["mlm_targets"] != -100]
        assert torch.equal(kept, labelled)  # same labels, same (row-major) order
        flat = batch["input_ids"].reshape(-1)
        assert torch.equal(flat[inputs["mlm_positions"][:labelled.numel()]], batch["input_ids"][batch["labels"] != -100])
    assert len(shapes) == 1


def test_more_labels_than_the_capacity_grow_it_instead_of_dropping_any():
    labels = torch.full((2, 16), -100)
    labels[:, 1:15] = 7  # 28 labels; token-level masking at 0.15 would label at most 2 x 3
    prepare = StepInputs(CPU, masking=MaskingConfig())
    positions, targets = prepare._predictions(labels.reshape(-1).numpy(), 2, 16)
    assert prediction_capacity(2, 16, MaskingConfig()) == 8
    assert positions.shape == (64,) and int((targets == 7).sum()) == 28 and int((targets == -100).sum()) == 36


def test_bf16_master_steps_follow_the_fp32_step(nsp):
    batches = loader_batches(nsp, 4)
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, max_steps=100)
    losses, finals = {}, {}
    for name in ("fp32", "bf16-master"):
        model = tiny_model(2000)
        optimizer = build_optimizer(model, cfg, device=CPU)
        precision = Precision(model, name, CPU)
        stream = iter(batches)
        stats = [train_step(precision.compute, stream, optimizer, step=i, cfg=cfg, rank=0,
                            prepare=StepInputs(CPU, masking=MaskingConfig()), precision=precision) for i in range(4)]
        losses[name] = torch.stack([s.sums[0] for s in stats])
        finals[name] = precision
    master = finals["bf16-master"]
    assert master.compute is not master.master
    for (name, m), c in zip(master.master.named_parameters(), master.compute.parameters()):
        assert m.dtype == torch.float32 and c.dtype == torch.bfloat16, name
        assert torch.equal(c, m.to(torch.bfloat16)), name  # the step runs on the masters, rounded
    tied = master.compute.mlm_head.decoder.weight
    assert tied is master.compute.encoder.embeddings.word.weight
    torch.testing.assert_close(losses["bf16-master"], losses["fp32"], rtol=2e-2, atol=0)


def test_speed_options_are_validated_together():
    with pytest.raises(ConfigError, match="compile_mode: 'max-autotune' takes effect only with compile: true"):
        TrainConfig(compile_mode="max-autotune")
    with pytest.raises(ConfigError, match="unpad: drops the padding that static_shapes adds"):
        TrainConfig(unpad=True, static_shapes=True)
    with pytest.raises(ConfigError, match="train.unpad: only for MLM pretraining"):
        resolve_for_dataset(PretrainConfig(train=TrainConfig(unpad=True)), vocab_size=100, task="causal_lm",
                            max_seq_length=64, source="ds")


TINY = ["--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--hidden-size", "32", "--num-heads", "2",
        "--intermediate-size", "64", "--batch-size", "8", "--warmup-steps", "2", "--log-every", "1",
        "--eval-batches", "2", "--dropout", "0.1", "--attention-dropout", "0.1"]


def test_an_unpadded_bf16_master_run_resumes_exactly(nsp, tmp_path, monkeypatch):
    """The masters and their optimizer state are what a checkpoint holds, so a resumed run
    rebuilds the bf16 network from them and goes on bit for bit."""
    import trainer.train as train_module

    fast = ["--set", "train.unpad=true", "--set", "train.precision=bf16-master"]
    common = [*TINY, *fast, "--data", str(nsp), "--max-steps", "6", "--save-every", "3", "--eval-every", "3"]
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    assert cli.main(["pretrain", *common, "--output", straight]) == 0
    real_step = train_module.train_step

    def crash_in_step_5(*args, step, **kwargs):
        if step == 4:
            raise KeyboardInterrupt
        return real_step(*args, step=step, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_in_step_5)
    assert cli.main(["pretrain", *common, "--output", interrupted]) == 130
    monkeypatch.undo()
    assert cli.main(["pretrain", "--resume", interrupted]) == 0
    a, b = read_metrics(straight), read_metrics(interrupted)
    drop = ("tokens_per_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in b] == [
        {k: v for k, v in r.items() if k not in drop} for r in a]
    saved = checkpoint.load_latest(interrupted)
    assert saved["config"]["train"]["precision"] == "bf16-master"
    assert all(t.dtype == torch.float32 for t in saved["model"].values() if t.is_floating_point())
    for name, tensor in checkpoint.load_latest(straight)["model"].items():
        assert torch.equal(tensor, saved["model"][name]), name
