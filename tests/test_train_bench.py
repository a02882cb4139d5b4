"""The training-throughput benchmark runs on the CPU and counts FLOPs as documented."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from trainer.config import ModelConfig
from trainer.models.encoder import BertForPreTraining

from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "bench" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_prints_a_table(bench, capsys):
    assert bench.main(["--config", str(REPO / "configs/train/bert-tiny.yaml"), "--steps", "2", "--warmup", "1",
                       "--seq-lengths", "32", "64", "--vocab-size", "1000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "synthetic batches" in out[0] and "CPU" in out[0]
    assert out[1].split() == ["seq", "batch", "precision", "compile", "step", "ms", "tokens/s", "TFLOP/s", "MFU"]
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["32", "64"] and all(r[1] == "8" and r[2] == "fp32" for r in rows)
    assert all(r[-1] == "n/a" for r in rows)  # no CPU peak unless --peak-tflops


def test_flops_per_token_by_hand(bench):
    with torch.device("meta"):
        model = BertForPreTraining(ModelConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=2,
                                               intermediate_size=256, nsp_head=True))
    # Per block: qkv 64*192+192, proj 64*64+64, fc 64*256+256, proj 256*64+64, two LayerNorms 4*64.
    per_block = (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64) + 4 * 64
    expected = 6 * 2 * per_block + 12 * 2 * 64 * 128 + 6 * 0.15 * (64 * 64 + 64 * 1000)
    assert bench.flops_per_token(model, 128, 0.15) == pytest.approx(expected)


def test_peak_table_applies_to_bf16_on_known_gpus_only(bench):
    assert bench.peak_flops(torch.device("cpu"), None, None) is None
    assert bench.peak_flops(torch.device("cpu"), None, 2.5) == 2.5e12
    assert bench.PEAK_BF16_TFLOPS["H100"] == bench.PEAK_BF16_TFLOPS["H200"] == 989.4
