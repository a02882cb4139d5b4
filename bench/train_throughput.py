"""Training throughput of the trainer's own step: tokens/s and model FLOPs utilisation (MFU).

Runs ``trainer.train.train_step`` (forward, backward, clipping, AdamW: exactly what
``mlm-train pretrain`` runs) on synthetic batches in the loader's format, or on a real dataset
with ``--data`` (then the loader's cost is included), and prints one table row per sequence
length::

    python bench/train_throughput.py                                # bert-base, seq 128 and 512
    python bench/train_throughput.py --config configs/train/bert-tiny.yaml --steps 5   # CPU smoke test
    python bench/train_throughput.py --data out/bert --steps 50     # real batches

Model FLOPs per trained token (forward + backward = 3 x forward, 2 FLOPs per multiply-add)::

    6 * N_encoder                    every token passes every block's weight matrices
    + 12 * L * H * T                 attention scores and weighted sum (QK^T and AV), T = seq length
    + 6 * p_mask * (H*H + H*V)       the MLM head, computed only at the masked ~15% of tokens

MFU divides the achieved model FLOP/s by the device's dense bf16 peak: 989 TFLOP/s for an
H100 SXM and an H200 (same tensor cores), 312 for an A100; ``--peak-tflops`` overrides it and is
required for MFU on the CPU or an unknown device.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import torch

from mlm_data.config.loading import load
from trainer.config import PretrainConfig, resolve_for_dataset
from trainer.models.encoder import BertForPreTraining
from trainer.optim import build_optimizer
from trainer.train import amp_dtype_for, train_step

#: Dense bf16 tensor-core peaks in TFLOP/s, matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}


def synthetic_batches(*, batch_size: int, seq_len: int, vocab_size: int, mask_prob: float,
                      seed: int = 0, count: int = 8) -> Iterator[dict[str, torch.Tensor]]:
    """Full-length NSP rows masked like the loader's output, cycled: random ids, segment B from
    the middle, ``mask_prob`` of the non-special positions labelled."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
        ids[:, 0], ids[:, seq_len // 2], ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
        special = torch.zeros(batch_size, seq_len, dtype=torch.bool)
        special[:, [0, seq_len // 2, seq_len - 1]] = True
        chosen = (torch.rand(batch_size, seq_len, generator=g) < mask_prob) & ~special
        batches.append({
            "input_ids": torch.where(chosen, torch.full_like(ids, 4), ids),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.int64),
            "token_type_ids": (torch.arange(seq_len) > seq_len // 2).long().expand(batch_size, -1).contiguous(),
            "labels": torch.where(chosen, ids, torch.full_like(ids, -100)),
            "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=g),
        })
    return itertools.cycle(batches)


def flops_per_token(model: BertForPreTraining, seq_len: int, mask_prob: float) -> float:
    c = model.config
    n_encoder = sum(p.numel() for p in model.encoder.blocks.parameters())
    attention = 12 * c.num_layers * c.hidden_size * seq_len
    head = 6 * mask_prob * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size)
    return 6 * n_encoder + attention + head


def peak_flops(device: torch.device, amp_dtype: torch.dtype | None, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda" or amp_dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, batches: Iterator, *, seq_len: int, mask_prob: float, steps: int, warmup: int,
            device: torch.device, peak_override: float | None) -> dict:
    torch.manual_seed(cfg.train.seed)
    model = BertForPreTraining(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.train, device=device)
    net = torch.compile(model) if cfg.train.compile else model
    amp = amp_dtype_for(cfg.train.precision, device)

    def step(i: int) -> int:
        return train_step(net, batches, optimizer, step=i, cfg=cfg.train, rank=0, device=device, amp_dtype=amp).tokens

    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    tokens = sum(step(i) for i in range(warmup, warmup + steps))
    sync(device)
    seconds = time.perf_counter() - start
    tokens_per_s = tokens / seconds
    achieved = flops_per_token(model, seq_len, mask_prob) * tokens_per_s
    peak = peak_flops(device, amp, peak_override)
    return {
        "seq": seq_len, "batch": cfg.train.batch_size * cfg.train.grad_accum,
        "precision": "bf16" if amp else "fp32", "compile": cfg.train.compile,
        "step_ms": 1000 * seconds / steps, "tokens_per_s": tokens_per_s,
        "tflops": achieved / 1e12, "mfu": achieved / peak if peak else None,
        "params_m": model.num_parameters() / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/train/bert-base.yaml")
    p.add_argument("--data", help="a dataset to read real batches from (default: synthetic batches)")
    p.add_argument("--seq-lengths", type=int, nargs="+", default=[128, 512],
                   help="synthetic sequence lengths (with --data: the dataset's)")
    p.add_argument("--batch-size", type=int,
                   help="rows per step (default: the config's on a GPU, 8 on the CPU so a smoke test takes seconds)")
    p.add_argument("--vocab-size", type=int, default=30522, help="synthetic vocabulary size (BERT's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2, or 5 with compile)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default: the config's")
    p.add_argument("--compile", choices=["true", "false"], help="default: the config's")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: from the table for GPUs)")
    args = p.parse_args(argv)

    cfg = load(PretrainConfig, args.config)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    train = replace(cfg.train, device=args.device, max_steps=10**9, warmup_steps=0,
                    batch_size=args.batch_size or (cfg.train.batch_size if device.type == "cuda" else 8),
                    precision=args.precision or cfg.train.precision,
                    compile=cfg.train.compile if args.compile is None else args.compile == "true")
    cfg = replace(cfg, train=train)
    warmup = args.warmup if args.warmup is not None else (5 if train.compile else 2)
    mask_prob = cfg.data.masking.probability

    rows = []
    if args.data:
        from trainer.loading.loader import DataSource, ShardLoader

        loader = ShardLoader([DataSource(args.data)], batch_size=train.batch_size, seed=train.seed,
                             options=cfg.data)
        run_cfg = resolve_for_dataset(cfg, vocab_size=loader.vocab_size, task=loader.task,
                                      max_seq_length=loader.max_seq_length, source=args.data)
        rows.append(measure(run_cfg, iter(loader), seq_len=loader.max_seq_length, mask_prob=mask_prob,
                            steps=args.steps, warmup=warmup, device=device, peak_override=args.peak_tflops))
        loader.close()
    else:
        for seq in args.seq_lengths:
            run_cfg = resolve_for_dataset(replace(cfg, model=replace(cfg.model, max_position_embeddings=max(
                seq, cfg.model.max_position_embeddings))), vocab_size=args.vocab_size, task="mlm_nsp",
                max_seq_length=seq, source="synthetic")
            batches = synthetic_batches(batch_size=train.batch_size, seq_len=seq, vocab_size=args.vocab_size,
                                        mask_prob=mask_prob)
            rows.append(measure(run_cfg, batches, seq_len=seq, mask_prob=mask_prob, steps=args.steps,
                                warmup=warmup, device=device, peak_override=args.peak_tflops))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.config} ({rows[0]['params_m']:.1f}M parameters) on {name}, "
          f"{'real batches from ' + args.data if args.data else 'synthetic batches'}, "
          f"{args.steps} timed steps after {warmup} warmup")
    print(f"{'seq':>5} {'batch':>6} {'precision':>9} {'compile':>7} {'step ms':>9} {'tokens/s':>11} "
          f"{'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['seq']:>5} {r['batch']:>6} {r['precision']:>9} {str(r['compile']).lower():>7} "
              f"{r['step_ms']:>9.1f} {r['tokens_per_s']:>11,.0f} {r['tflops']:>8.2f} {mfu:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
