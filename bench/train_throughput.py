"""Training throughput of the trainer's own step: tokens/s and model FLOPs utilisation (MFU).

Runs ``trainer.train.train_step`` (forward, backward, clipping, AdamW: exactly what
``mlm-train pretrain`` runs) on synthetic batches in the loader's format, or on a real dataset
through ``ShardLoader`` with ``--data`` (then the loader's cost is included), and prints one
table row per measurement::

    python bench/train_throughput.py                                # bert-base, seq 128 and 512
    python bench/train_throughput.py --config configs/train/bert-tiny.yaml --steps 5   # CPU smoke test
    python bench/train_throughput.py --data out/bert --num-workers 4   # real batches
    python bench/train_throughput.py --precision bf16-master --static-shapes --compile true \\
        --compile-mode reduce-overhead                              # the speed options
    python bench/train_throughput.py --compare-hf                   # + transformers, same batches
    python bench/train_throughput.py --profile                      # + where each step's time goes
    python bench/train_throughput.py --suite                        # the whole GPU table, one run

``--compare-hf`` adds a row for transformers' ``BertForPreTraining`` (SDPA attention, its own
MLM head over every position) after each of ours: same batches, same optimizer, clipping and
precision, same process. ``--profile`` runs ``torch.profiler`` over a few more steps of each
row and prints the host/device time split and the costliest kernels (``trainer.profiling``).

``--suite`` is the issue-13 table in one call, for a GPU session (about 8 minutes on an H200;
rows are ordered by importance and printed as they finish, and rows that would start after
``--budget-s`` are listed as skipped)::

    python bench/train_throughput.py --suite --build-only   # where Beam is: datasets into bench-output/
    python bench/train_throughput.py --suite                # on the GPU machine (bench-output/ carried)

It measures bert-base at seq 128 batch 256 and 512 and seq 512 batch 64, eager and compiled,
bf16 autocast against bf16-master with static shapes and CUDA graphs, ours against
transformers, synthetic batches against real ones through the loader (4 workers) from two
datasets built from the bundled demo corpus with the pipeline (or taken from ``--full-data``
and ``--padded-data``): ``mlm_fullsent`` rows (13 % padding) and ``mlm_nsp`` rows (10 %),
the latter trained padded and unpadded. Tokens/s counts real tokens, so padding lowers it: compare real
and synthetic batches by ``step_ms`` at the same shape (with ``static_shapes`` the shapes are
identical).

Model FLOPs per trained token (forward + backward = 3 x forward, 2 FLOPs per multiply-add)::

    6 * N_encoder                    every token passes every block's weight matrices
    + 12 * L * H * T                 attention scores and weighted sum (QK^T and AV), T = seq length
    + 6 * p_mask * (H*H + H*V)       the MLM head, computed only at the masked ~15% of tokens

The same model FLOPs count for transformers' rows (their head over every token is waste, not
work). Tokens are real tokens: padding is not counted. MFU divides the achieved model FLOP/s by
the device's dense bf16 peak: 989 TFLOP/s for an H100 SXM and an H200 (same tensor cores), 312
for an A100; ``--peak-tflops`` overrides it and is required for MFU on the CPU or an unknown
device.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlm_data.config.loading import load, to_dict  # noqa: E402
from trainer.config import ModelConfig, PretrainConfig, resolve_for_dataset  # noqa: E402
from trainer.models.encoder import BertForPreTraining, Prediction  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from trainer.precision import Precision  # noqa: E402
from trainer.profiling import format_profile, profile_steps  # noqa: E402
from trainer.step_inputs import StepInputs  # noqa: E402
from trainer.train import compile_network, train_step  # noqa: E402

#: Dense bf16 tensor-core peaks in TFLOP/s, matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
DEMO = REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz"
TOKENIZER = REPO / "tests" / "data" / "wordpiece-2k.json"
#: The suite's shapes (sequence length x batch): the issue's table.
SUITE_SHAPES = ((128, 256), (128, 512), (512, 64))


class Case(NamedTuple):
    """One table row: which network, which batches, which step options."""

    seq: int
    batch: int
    model: str = "ours"
    """``ours`` or ``hf`` (transformers' BertForPreTraining)."""
    data: str | None = None
    """A dataset to read through the loader; None = synthetic batches."""
    precision: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    static_shapes: bool = False
    sync_free: bool = False
    unpad: bool = False
    num_workers: int = 0
    profile: bool = False

    @property
    def options(self) -> str:
        opts = [name for name in ("static_shapes", "sync_free", "unpad") if getattr(self, name)]
        if self.compile and self.compile_mode != "default":
            opts.append(self.compile_mode)
        if self.data is not None:
            opts.append(f"workers={self.num_workers}")
        return ",".join(opts) or "-"


def synthetic_batches(*, batch_size: int, seq_len: int, vocab_size: int, mask_prob: float,
                      seed: int = 0, count: int = 8, pin: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Full-length NSP rows masked like the loader's output, cycled: random ids, segment B from
    the middle, ``mask_prob`` of the non-special positions labelled; page-locked with ``pin``,
    as the loader's batches are on a GPU."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
        ids[:, 0], ids[:, seq_len // 2], ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
        special = torch.zeros(batch_size, seq_len, dtype=torch.bool)
        special[:, [0, seq_len // 2, seq_len - 1]] = True
        chosen = (torch.rand(batch_size, seq_len, generator=g) < mask_prob) & ~special
        batch = {
            "input_ids": torch.where(chosen, torch.full_like(ids, 4), ids),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.int64),
            "token_type_ids": (torch.arange(seq_len) > seq_len // 2).long().expand(batch_size, -1).contiguous(),
            "labels": torch.where(chosen, ids, torch.full_like(ids, -100)),
            "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=g),
        }
        batches.append({k: v.pin_memory() for k, v in batch.items()} if pin else batch)
    return itertools.cycle(batches)


class HFPreTraining(nn.Module):
    """transformers' ``BertForPreTraining`` (SDPA attention) behind our step's interface.

    Its loss is its own (MLM head over every position, plus NSP); the step's figures are taken
    from the NSP logits, which cost nothing (the benchmark reports no accuracies)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from transformers import BertConfig
        from transformers import BertForPreTraining as HFBert

        from trainer.models.hf_interop import hf_config

        self.config = cfg
        config = BertConfig(**hf_config(to_dict(cfg), architecture="BertForPreTraining", labels=None, pad_token_id=0))
        self.hf = HFBert._from_config(config, attn_implementation="sdpa")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                labels: torch.Tensor, next_sentence_label: torch.Tensor) -> Prediction:
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      labels=labels, next_sentence_label=next_sentence_label)
        return Prediction(out.loss, out.seq_relationship_logits, next_sentence_label)


def flops_per_token(model: BertForPreTraining, seq_len: int, mask_prob: float) -> float:
    c = model.config
    n_encoder = sum(p.numel() for p in model.encoder.blocks.parameters())
    attention = 12 * c.num_layers * c.hidden_size * seq_len
    head = 6 * mask_prob * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size)
    return 6 * n_encoder + attention + head


def peak_flops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda" or precision not in ("bf16", "bf16-master"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Counted:
    """The batch stream, counting the padded token slots it hands out."""

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]]) -> None:
        self.batches, self.slots = batches, 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = next(self.batches)
        self.slots += batch["input_ids"].numel()
        return batch


def measure(cfg: PretrainConfig, case: Case, *, steps: int, warmup: int, device: torch.device,
            vocab_size: int, peak_override: float | None, profile_steps_n: int = 3,
            clock=time.perf_counter) -> dict:
    """Time ``steps`` steps of ``case`` after ``warmup`` untimed ones; a row of the table."""
    train = replace(cfg.train, batch_size=case.batch, precision=case.precision, compile=case.compile,
                    compile_mode=case.compile_mode, static_shapes=case.static_shapes, sync_free=case.sync_free,
                    unpad=case.unpad, max_steps=10**9, warmup_steps=0)
    model_cfg = replace(cfg.model, vocab_size=vocab_size,
                        max_position_embeddings=max(case.seq, cfg.model.max_position_embeddings))
    masking = cfg.data.masking
    loader = None
    if case.data is None:
        source = synthetic_batches(batch_size=case.batch, seq_len=case.seq, vocab_size=vocab_size,
                                   mask_prob=masking.probability, pin=device.type == "cuda")
        task, seq = "mlm_nsp", case.seq
    else:
        from trainer.loading.loader import DataSource, ShardLoader

        options = replace(cfg.data, num_workers=case.num_workers, pad_to_max_length=case.static_shapes)
        loader = ShardLoader([DataSource(case.data)], batch_size=case.batch, seed=train.seed, options=options,
                             pin_memory=device.type == "cuda")
        source, task, seq = iter(loader), loader.task, loader.max_seq_length
        model_cfg = replace(model_cfg, vocab_size=max(vocab_size, loader.vocab_size))
    run_cfg = resolve_for_dataset(replace(cfg, model=model_cfg, train=train), vocab_size=model_cfg.vocab_size,
                                  task=task, max_seq_length=seq, source=case.data or "synthetic")
    batches = _Counted(source)
    try:
        torch.manual_seed(train.seed)
        model: nn.Module = (BertForPreTraining(run_cfg.model) if case.model == "ours"
                            else HFPreTraining(run_cfg.model)).to(device)
        optimizer = build_optimizer(model, train, device=device)
        precision = Precision(model, train.precision, device)
        net = compile_network(precision.compute, train)
        prepare = StepInputs(device, masking=masking, sync_free=train.sync_free or train.static_shapes,
                             unpad=train.unpad)
        counter = itertools.count()

        def step() -> int:
            return train_step(net, batches, optimizer, step=next(counter), cfg=train, rank=0, prepare=prepare,
                              precision=precision).tokens

        for _ in range(warmup):
            step()
        sync(device)
        slots_before = batches.slots
        start = clock()
        tokens = sum(step() for _ in range(steps))
        sync(device)
        seconds = clock() - start
        slots = batches.slots - slots_before
        report = format_profile(profile_steps(step, steps=profile_steps_n, device=device)) if case.profile else None
    finally:
        if loader is not None:
            loader.close()
    with torch.device("meta"):
        reference = BertForPreTraining(run_cfg.model)
    tokens_per_s = tokens / seconds
    achieved = flops_per_token(reference, seq, masking.probability) * tokens_per_s
    peak = peak_flops(device, precision.name, peak_override)
    return {
        "case": case, "seq": seq, "batch": case.batch * train.grad_accum, "precision": precision.name,
        "step_ms": 1000 * seconds / steps, "tokens_per_s": tokens_per_s, "tflops": achieved / 1e12,
        "mfu": achieved / peak if peak else None, "padding": 1 - tokens / max(slots, 1),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "profile": report,
    }


HEADER = (f"{'model':<5} {'data':<10} {'seq':>4} {'batch':>5} {'precision':<11} {'compile':<7} {'options':<28} "
          f"{'pad%':>5} {'step_ms':>9} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6}")


def format_row(r: dict) -> str:
    c: Case = r["case"]
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
    data = "synthetic" if c.data is None else Path(c.data).name[:10]
    return (f"{c.model:<5} {data:<10} {r['seq']:>4} {r['batch']:>5} {r['precision']:<11} "
            f"{str(c.compile).lower():<7} {c.options:<28} {100 * r['padding']:>5.1f} {r['step_ms']:>9.1f} "
            f"{r['tokens_per_s']:>11,.0f} {r['tflops']:>8.2f} {mfu:>6}")


def suite_cases(shapes: list[tuple[int, int]], *, full: str | None, padded: str | None, compiled: bool,
                workers: int) -> list[Case]:
    """The issue-13 table, cheap rows first, then compiled ones by importance (see the module
    docstring); real-data rows only for the datasets there are."""
    (s, b), (s_big, b_big), (s_long, b_long) = shapes
    best = {"precision": "bf16-master", "static_shapes": True}
    graphs = {"compile": True, "compile_mode": "reduce-overhead", **best}
    rows = [
        Case(s, b, precision="bf16"), Case(s, b, model="hf", precision="bf16"),
        Case(s, b, precision="bf16-master", sync_free=True),
        Case(s_big, b_big, precision="bf16"), Case(s_long, b_long, precision="bf16"),
        Case(s_long, b_long, model="hf", precision="bf16"),
    ]
    if full:
        rows.append(Case(s, b, data=full, precision="bf16", num_workers=workers))
    if padded:
        rows += [Case(s, b, data=padded, precision="bf16", num_workers=workers),
                 Case(s, b, data=padded, precision="bf16", num_workers=workers, unpad=True)]
    if compiled:
        rows += [
            Case(s, b, precision="bf16", compile=True, profile=True),
            Case(s, b, model="hf", precision="bf16", compile=True),
            Case(s, b, compile=True, **best),
            Case(s, b, profile=True, **graphs),
            Case(s_big, b_big, **graphs),
            *([Case(s, b, data=full, num_workers=workers, **graphs)] if full else []),
            Case(s_long, b_long, precision="bf16", compile=True),
            Case(s_long, b_long, model="hf", precision="bf16", compile=True),
            Case(s_long, b_long, **graphs),
            *([Case(s, b, data=padded, num_workers=workers, compile=True, precision="bf16-master", unpad=True)]
              if padded else []),
        ]
    return rows


def build_dataset(work: Path, task: str, length: int) -> str:
    """A ``task`` dataset of ``length``-token rows from the demo corpus (reused when built)."""
    from mlm_data.config.preprocess import PreprocessConfig
    from pipelines.preprocess import run

    out = work / f"{task}-{length}"
    if not (out / "manifest.json").exists():
        extra = {"input.paths": [str(DEMO)], "output.path": str(out), "output.num_buckets": 4,
                 "output.validation_fraction": 0.0, "output.overwrite": True, "tokenizer.path": str(TOKENIZER),
                 "instances.task": task, "instances.max_seq_length": length}
        run(load(PreprocessConfig, str(REPO / "configs" / "pretrain" / "demo.yaml"), settings=extra),
            echo=lambda _m: None)
    return str(out)


def hf_ratios(rows: list[dict]) -> list[str]:
    """``ours / transformers`` at each shape and compile setting both were measured at."""
    lines = []
    for hf in (r for r in rows if r["case"].model == "hf"):
        c = hf["case"]
        ours = [r for r in rows if r["case"].model == "ours" and r["case"].data is None and r["seq"] == hf["seq"]
                and r["batch"] == hf["batch"] and r["case"].compile == c.compile]
        if ours:
            best = max(ours, key=lambda r: r["tokens_per_s"])
            lines.append(f"seq {hf['seq']} batch {hf['batch']} {'compiled' if c.compile else 'eager'}: ours "
                         f"({best['precision']}, {best['case'].options}) {best['tokens_per_s']:,.0f} tokens/s = "
                         f"{best['tokens_per_s'] / hf['tokens_per_s']:.2f}x transformers")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "train" / "bert-base.yaml"))
    p.add_argument("--data", help="a dataset to read real batches from (default: synthetic batches)")
    p.add_argument("--num-workers", type=int, help="loader workers with --data (default: the config's)")
    p.add_argument("--seq-lengths", type=int, nargs="+", default=[128, 512],
                   help="synthetic sequence lengths (with --data: the dataset's)")
    p.add_argument("--batch-size", type=int,
                   help="rows per step (default: the config's on a GPU, 8 on the CPU so a smoke test takes seconds)")
    p.add_argument("--vocab-size", type=int, default=30522, help="model vocabulary (BERT's); synthetic ids below it")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2, or 5 with compile)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "bf16-master"], help="default: the config's")
    p.add_argument("--compile", choices=["true", "false"], help="default: the config's")
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune",
                                              "max-autotune-no-cudagraphs"], default="default")
    for name in ("static-shapes", "sync-free", "unpad"):
        p.add_argument(f"--{name}", action="store_true", help=f"train.{name.replace('-', '_')} (see trainer.config)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: from the table for GPUs)")
    p.add_argument("--compare-hf", action="store_true", help="add transformers' BertForPreTraining on the same batches")
    p.add_argument("--profile", action="store_true", help="profile each row: host/device split, top kernels")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="time steps by the wall clock, or by this process's CPU time (steadier for CPU-only "
                        "comparisons on a shared machine; meaningless on a GPU)")
    p.add_argument("--suite", action="store_true", help="the issue-13 GPU table in one run (see above)")
    p.add_argument("--shapes", nargs=3, metavar="SEQxBATCH", help="the suite's three shapes (default "
                   "128x256 128x512 512x64; small ones make a CPU smoke test)")
    p.add_argument("--eager-only", action="store_true", help="suite: leave out the compiled rows")
    p.add_argument("--full-data", help="suite: a dataset without padding (default: built from the demo corpus)")
    p.add_argument("--padded-data", help="suite: a dataset with padding (default: built from the demo corpus)")
    p.add_argument("--work", type=Path, default=REPO / "bench-output" / "train-suite",
                   help="suite: where its datasets are built, or found when built before")
    p.add_argument("--build-only", action="store_true",
                   help="suite: build its datasets and stop (to carry them to a machine without Beam)")
    p.add_argument("--budget-s", type=float, default=400.0, help="suite: start no row after this many seconds")
    args = p.parse_args(argv)

    cfg = load(PretrainConfig, args.config)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    compile_ = cfg.train.compile if args.compile is None else args.compile == "true"
    cfg = replace(cfg, train=replace(cfg.train, device=args.device, compile=False, compile_mode="default"))
    batch = args.batch_size or (cfg.train.batch_size if device.type == "cuda" else 8)
    workers = cfg.data.num_workers if args.num_workers is None else args.num_workers
    started = time.perf_counter()
    notes: list[str] = []

    if args.suite:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes] if args.shapes else list(SUITE_SHAPES)
        seq = shapes[0][0]
        datasets = {}
        for name, given, task in (("full", args.full_data, "mlm_fullsent"), ("padded", args.padded_data, "mlm_nsp")):
            try:
                datasets[name] = given or build_dataset(args.work, task, seq)
            except Exception as e:  # no Beam on this machine: pass datasets built elsewhere
                notes.append(f"no {task} dataset ({type(e).__name__}: {e}); pass --{name}-data to add its rows")
        if args.build_only:
            print("\n".join([*notes, *(f"{name}: {path}" for name, path in datasets.items())]))
            return 0 if len(datasets) == 2 else 1
        cases = suite_cases(shapes, full=datasets.get("full"), padded=datasets.get("padded"),
                            compiled=not args.eager_only, workers=workers)
        cases = [c._replace(profile=c.profile and args.profile) for c in cases]
    else:
        options = dict(precision=args.precision or cfg.train.precision, compile=compile_,
                       compile_mode=args.compile_mode, static_shapes=args.static_shapes, sync_free=args.sync_free,
                       unpad=args.unpad, profile=args.profile)
        seqs = [0] if args.data else args.seq_lengths
        cases = []
        for seq in seqs:
            ours = Case(seq, batch, data=args.data, num_workers=workers, **options)
            cases.append(ours)
            if args.compare_hf:
                cases.append(ours._replace(model="hf", static_shapes=False, sync_free=False, unpad=False))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.config} on {name}, torch {torch.__version__}, {args.steps} timed steps after the warm-up, "
          f"{args.clock} time; tokens/s counts real (non-padding) tokens", flush=True)
    print(HEADER, flush=True)
    rows = []
    for case in cases:
        if args.suite and time.perf_counter() - started > args.budget_s:
            notes.append(f"skipped (over --budget-s): {case}")
            continue
        warmup = args.warmup if args.warmup is not None else (5 if case.compile else 2)
        try:
            row = measure(cfg, case, steps=args.steps, warmup=warmup, device=device, vocab_size=args.vocab_size,
                          peak_override=args.peak_tflops, profile_steps_n=args.profile_steps,
                          clock=time.process_time if args.clock == "cpu" else time.perf_counter)
        except Exception as e:  # one failing row (a missing package, an unsupported mode) keeps the rest
            if not args.suite:
                raise
            notes.append(f"failed: {case}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            traceback.print_exc(file=sys.stderr)
            continue
        rows.append(row)
        print(format_row(row), flush=True)
        if row["profile"]:
            notes.append(f"profile of: {format_row(row)}\n{row['profile']}")
    for line in [*hf_ratios(rows), *notes]:
        print(line, flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
