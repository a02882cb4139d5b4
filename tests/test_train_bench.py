"""The training-throughput benchmark runs on the CPU and counts FLOPs as documented."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from trainer.config import ModelConfig
from trainer.models.encoder import BertForPreTraining

from conftest import REPO

# The CPU's math fallback of jagged attention warns about another nested layout (see unpadded.py).
pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
TINY = ["--config", str(REPO / "configs/train/bert-tiny.yaml"), "--vocab-size", "2000", "--warmup", "1"]
COLUMNS = ["model", "data", "seq", "batch", "precision", "compile", "options", "pad%", "step_ms", "tokens/s",
           "TFLOP/s", "MFU"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "bench" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(out: str) -> list[dict[str, str]]:
    lines = out.splitlines()
    assert lines[1].split() == COLUMNS
    rows = []
    for line in lines[2:]:
        cells = line.split()
        if len(cells) != len(COLUMNS) or cells[0] not in ("ours", "hf"):
            break
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def test_cpu_smoke_run_prints_a_table(bench, capsys):
    assert bench.main([*TINY, "--steps", "2", "--seq-lengths", "32", "64"]) == 0
    out = capsys.readouterr().out
    assert "CPU" in out.splitlines()[0]
    rows = table(out)
    assert [r["seq"] for r in rows] == ["32", "64"] and all(r["batch"] == "8" and r["precision"] == "fp32" for r in rows)
    assert all(r["MFU"] == "n/a" and r["pad%"] == "0.0" for r in rows)  # no CPU peak unless --peak-tflops


def test_compare_hf_and_profile_on_the_same_batches(bench, capsys):
    assert bench.main([*TINY, "--steps", "1", "--seq-lengths", "32", "--compare-hf", "--profile",
                       "--profile-steps", "1", "--precision", "bf16-master", "--sync-free"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert [(r["model"], r["precision"], r["options"]) for r in rows] == [("ours", "bf16-master", "sync_free"),
                                                                         ("hf", "bf16-master", "-")]
    assert "x transformers" in out
    assert out.count("per step: ") == 2 and out.count("top operators by CPU time:") == 2
    assert "aten::mm" in out or "aten::addmm" in out


def test_the_gpu_suite_runs_end_to_end_with_tiny_shapes(bench, capsys, fullsent, nsp):
    assert bench.main([*TINY, "--suite", "--eager-only", "--shapes", "64x8", "64x16", "32x4", "--steps", "1",
                       "--num-workers", "1", "--full-data", str(fullsent), "--padded-data", str(nsp)]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert [(r["model"], r["data"], r["seq"], r["batch"], r["precision"], r["options"]) for r in rows] == [
        ("ours", "synthetic", "64", "8", "bf16", "-"), ("hf", "synthetic", "64", "8", "bf16", "-"),
        ("ours", "synthetic", "64", "8", "bf16-master", "sync_free"), ("ours", "synthetic", "64", "16", "bf16", "-"),
        ("ours", "synthetic", "32", "4", "bf16", "-"), ("hf", "synthetic", "32", "4", "bf16", "-"),
        ("ours", "fullsent", "64", "8", "bf16", "workers=1"), ("ours", "nsp", "64", "8", "bf16", "workers=1"),
        ("ours", "nsp", "64", "8", "bf16", "unpad,workers=1")]
    assert rows[7]["pad%"] == rows[8]["pad%"]  # the same batches, padded and unpadded
    assert "failed" not in out and "x transformers" in out
    assert bench.main(["--suite", "--build-only", "--full-data", str(fullsent), "--padded-data", str(nsp)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"full: {fullsent}", f"padded: {nsp}"]


def test_flops_per_token_by_hand(bench):
    with torch.device("meta"):
        model = BertForPreTraining(ModelConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=2,
                                               intermediate_size=256, nsp_head=True))
    # Per block: qkv 64*192+192, proj 64*64+64, fc 64*256+256, proj 256*64+64, two LayerNorms 4*64.
    per_block = (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64) + 4 * 64
    expected = 6 * 2 * per_block + 12 * 2 * 64 * 128 + 6 * 0.15 * (64 * 64 + 64 * 1000)
    assert bench.flops_per_token(model, 128, 0.15) == pytest.approx(expected)


def test_peak_table_applies_to_bf16_on_known_gpus_only(bench):
    assert bench.peak_flops(torch.device("cpu"), "fp32", None) is None
    assert bench.peak_flops(torch.device("cpu"), "fp32", 2.5) == 2.5e12
    assert bench.PEAK_BF16_TFLOPS["H100"] == bench.PEAK_BF16_TFLOPS["H200"] == 989.4
