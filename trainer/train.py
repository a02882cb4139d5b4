"""The pretraining loop: one function to read top to bottom, in the spirit of nanoGPT's train.py.

``pretrain(cfg)`` opens the datasets, builds the model and optimizer (or restores them from the
run's newest checkpoint), then repeats ``train_step`` until ``max_steps``, logging, evaluating
and checkpointing on the way. The same code runs alone or as one of several torchrun ranks.

Exact resume: everything a step computes is a function of the checkpoint and the step number.
The batches come from the loader's saved state, the learning rate from ``lr_at(step)``, and
dropout from a generator re-seeded before every micro-step with ``dropout_seed(seed, step,
micro, rank)``. A run stopped at step k and resumed therefore reproduces the uninterrupted
run's losses bit for bit on the CPU in fp32, whatever ``num_workers`` either used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel

from mlm_data import storage
from mlm_data.config_loader import to_dict
from mlm_data.errors import ConfigError, MlmDataError
from mlm_data.manifest import Manifest
from mlm_data.schema import MLM_TASKS
from mlm_data.seeding import derive_key
from trainer import checkpoint, distributed
from trainer.config import (
    PretrainConfig,
    TrainConfig,
    check_resume_compatible,
    parse_source,
    resolve_for_dataset,
)
from trainer.data import DataSource, ShardLoader
from trainer.evaluate import evaluate, model_inputs
from trainer.metrics import MetricsLog, Progress, format_duration
from trainer.model import BertForPreTraining
from trainer.optim import build_optimizer, lr_at

CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class RunResult:
    run: str
    step: int
    """Optimizer steps completed."""
    model: BertForPreTraining
    """The trained model (on this rank's device)."""
    first: dict[str, Any] | None
    """The first train record this invocation logged."""
    last: dict[str, Any] | None
    """The last train record this invocation logged."""
    evaluation: dict[str, Any] | None
    """The last evaluation's metrics.jsonl record (None without an eval split)."""


def dropout_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of the global torch generator for one micro-step's dropout."""
    return derive_key(seed, "dropout", step, micro, rank)


def amp_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


class TrainingDiverged(MlmDataError):
    """The loss became NaN or infinite: the run cannot usefully go on."""


class StepStats(NamedTuple):
    sums: torch.Tensor
    """``(loss, mlm_loss, nsp_loss, mlm_correct, mlm_count)`` summed over micro-batches, on the device."""
    tokens: int
    """Non-padding tokens in this step's micro-batches (on this rank)."""
    grad_norm: torch.Tensor | None
    lr: float


def train_step(model: torch.nn.Module, batches: Iterator[Mapping[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, *, step: int, cfg: TrainConfig,
               rank: int, device: torch.device, amp_dtype: torch.dtype | None) -> StepStats:
    """One optimizer step: ``grad_accum`` micro-batches of forward and backward, clip, update."""
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    sums = torch.zeros(5, device=device)
    tokens = 0
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        tokens += int(batch["attention_mask"].sum())
        inputs = model_inputs(batch, device)
        torch.manual_seed(dropout_seed(cfg.seed, step, micro, rank))
        # DDP averages gradients across ranks on the last micro-batch only.
        last = micro == cfg.grad_accum - 1
        with nullcontext() if last or not isinstance(model, DistributedDataParallel) else model.no_sync():
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(**inputs)
            (out.loss / cfg.grad_accum).backward()
        with torch.no_grad():
            nsp = out.nsp_loss if out.nsp_loss is not None else out.loss.new_zeros(())
            correct = (out.logits.argmax(-1) == out.mlm_labels).sum()
            count = sums.new_tensor(out.mlm_labels.numel())
            sums += torch.stack([out.loss, out.mlm_loss, nsp, correct.float(), count])
    grad_norm = None
    if cfg.clip_grad_norm is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(sums, tokens, grad_norm, lr)


def pretrain(cfg: PretrainConfig, *, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train the run in ``cfg.output``; ``resume`` continues it from its newest checkpoint,
    ``overwrite`` starts it afresh even if the folder holds an earlier run's checkpoints."""
    ctx = distributed.setup(cfg.train.device)
    with ExitStack() as cleanup:
        cleanup.callback(distributed.teardown)
        return _pretrain(cfg, ctx, resume=resume, overwrite=overwrite, cleanup=cleanup)


def _pretrain(cfg: PretrainConfig, ctx: distributed.Context, *, resume: bool, overwrite: bool,
              cleanup: ExitStack) -> RunResult:
    if not cfg.output:
        raise ConfigError("output: no run folder given; pass --output RUN")
    if not cfg.data.sources:
        raise ConfigError("data.sources: nothing to train on; pass --data DATASET")
    run, t = cfg.output, cfg.train
    saved = checkpoint.load_latest(run) if resume else None
    if saved is None and checkpoint.list_checkpoints(run):
        if not overwrite:
            raise ConfigError(f"{run}: already holds checkpoints; continue it with --resume {run}, "
                              "replace it with --overwrite, or choose another --output")
        if ctx.is_main:
            for _, url in checkpoint.list_checkpoints(run):
                storage.remove(url)
    progress = Progress(t.max_steps, enabled=ctx.is_main)

    # ---- data, and the config fields only the data knows
    sources = [DataSource(*parse_source(s)) for s in cfg.data.sources]
    loader = _make_loader(cfg, ctx, sources, split="train")
    cleanup.callback(loader.close)
    if loader.task not in MLM_TASKS:
        raise ConfigError(f"{cfg.data.sources[0]}: task {loader.task!r} is not a pretraining task for "
                          f"`mlm-train pretrain` (supported: {', '.join(MLM_TASKS)})")
    cfg = resolve_for_dataset(cfg, vocab_size=loader.vocab_size, task=loader.task,
                              max_seq_length=loader.max_seq_length, source=cfg.data.sources[0])
    if saved is not None:
        check_resume_compatible(saved["config"], to_dict(cfg), source=run)
    eval_loader = _make_eval_loader(cfg, ctx, sources, progress)
    if eval_loader is not None:
        cleanup.callback(eval_loader.close)

    # ---- model and optimizer, fresh or restored
    torch.manual_seed(t.seed)
    model = BertForPreTraining(cfg.model).to(ctx.device)
    optimizer = build_optimizer(model, t, device=ctx.device)
    step = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        _restore_loader(loader, saved["loader"], ctx, source=run)
        step = saved["step"]
    metrics = MetricsLog(run, resume_step=step if saved is not None else None, enabled=ctx.is_main)
    if ctx.is_main:
        storage.write_bytes(storage.join(run, CONFIG_NAME), _to_yaml(to_dict(cfg)))
    amp_dtype = amp_dtype_for(t.precision, ctx.device)
    net: torch.nn.Module = torch.compile(model) if t.compile else model
    if ctx.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    global_batch = t.batch_size * t.grad_accum * ctx.world_size
    progress.message(f"{'resuming at step ' + str(step) if step else 'training'} {run}: "
                     f"{model.num_parameters() / 1e6:.2f}M parameters, {ctx.world_size} rank(s) on "
                     f"{ctx.device.type}, {'bf16' if amp_dtype else 'fp32'}, global batch {global_batch}, "
                     f"{loader.rows_per_epoch:,} rows per epoch, task {loader.task}")

    def evaluate_at(at_step: int) -> dict[str, Any]:
        ev = evaluate(model, eval_loader.one_epoch(), device=ctx.device, amp_dtype=amp_dtype,
                      max_batches=t.eval_batches)
        record = {"step": at_step, "split": cfg.data.eval_split, **ev}
        metrics.append(record)
        metrics.flush()
        progress.message(describe_evaluation(record))
        return record

    # ---- the loop
    batches = iter(loader)
    first = last = first_eval = evaluation = None
    if eval_loader is not None and step == 0:
        first_eval = evaluation = evaluate_at(0)  # the curves start from the untrained model
    started = t_last = time.perf_counter()
    start_step, tokens = step, 0
    while step < t.max_steps:
        stats = train_step(net, batches, optimizer, step=step, cfg=t, rank=ctx.rank,
                           device=ctx.device, amp_dtype=amp_dtype)
        step += 1
        tokens += stats.tokens
        done = step == t.max_steps
        if step == 1 or step % t.log_every == 0 or done:
            last = _train_record(step, stats, tokens, time.perf_counter() - t_last, t,
                                 nsp=bool(cfg.model.nsp_head), world_size=ctx.world_size,
                                 steps_per_epoch=loader.steps_per_epoch)
            first = first or last
            metrics.append(last)
            progress.update(step, last, elapsed=time.perf_counter() - started, steps_done=step - start_step)
            if not math.isfinite(last["loss"]):
                metrics.flush()
                raise TrainingDiverged(f"{run}: the loss is {last['loss']} at step {step} (lr {last['lr']:.2e}); "
                                       "lower --lr, raise --warmup-steps or use --precision fp32, then start "
                                       "again or --resume from the last checkpoint")
            tokens, t_last = 0, time.perf_counter()
        if eval_loader is not None and (done or (t.eval_every and step % t.eval_every == 0)):
            evaluation = evaluate_at(step)
            first_eval = first_eval or evaluation
            tokens, t_last = 0, time.perf_counter()
        if done or (t.save_every and step % t.save_every == 0):
            if ctx.is_main:
                state = checkpoint.build_state(step=step, model=model, optimizer=optimizer,
                                               loader=loader.state_dict(), config=to_dict(cfg))
                checkpoint.save(run, state, keep_last=t.keep_last)
            metrics.flush()
            tokens, t_last = 0, time.perf_counter()

    if ctx.is_main:
        _finish(run, step, start_step, time.perf_counter() - started, (first, last), (first_eval, evaluation),
                progress)
    return RunResult(run=run, step=step, model=model, first=first, last=last, evaluation=evaluation)


def _train_record(step: int, stats: StepStats, tokens: int, seconds: float, t: TrainConfig, *,
                  nsp: bool, world_size: int, steps_per_epoch: int) -> dict[str, Any]:
    """The metrics.jsonl record of a logged step, averaged over micro-batches and ranks."""
    sums = distributed.all_reduce_sum(torch.cat([stats.sums, stats.sums.new_tensor([tokens])])).tolist()
    loss, mlm_loss, nsp_loss, correct, count, all_tokens = sums
    n = t.grad_accum * world_size
    record = {"step": step, "split": "train", "loss": loss / n, "mlm_loss": mlm_loss / n}
    if nsp:
        record["nsp_loss"] = nsp_loss / n
    record["mlm_accuracy"] = correct / max(count, 1.0)
    record["lr"] = stats.lr
    if stats.grad_norm is not None:
        record["grad_norm"] = float(stats.grad_norm)
    record["tokens_per_s"] = all_tokens / max(seconds, 1e-9)
    record["epoch"] = round(step * t.grad_accum / max(steps_per_epoch, 1), 4)
    return record


def describe_evaluation(ev: Mapping[str, Any]) -> str:
    text = (f"eval {ev['split']} @ step {ev['step']}: mlm_loss {ev['mlm_loss']:.4f} "
            f"(perplexity {ev['perplexity']:.1f}), MLM accuracy {ev['mlm_accuracy']:.2%} vs "
            f"{ev['unigram_accuracy']:.2%} unigram baseline")
    if "nsp_accuracy" in ev:
        text += f", NSP accuracy {ev['nsp_accuracy']:.2%}"
    return text + f" [{ev['predictions']:,} masked tokens]"


Records = tuple[dict[str, Any] | None, dict[str, Any] | None]


def _finish(run: str, step: int, start_step: int, seconds: float, train: Records, evals: Records,
            progress: Progress) -> None:
    """The closing summary: where the losses started and ended, then the plot."""
    (first, last), (first_eval, last_eval) = train, evals
    if first is None or last is None:
        progress.message(f"{run} is already at step {step} (train.max_steps); raise --max-steps to train further")
        return
    progress.message(f"done: steps {start_step}→{step} in {format_duration(seconds)}")
    progress.message(f"  train mlm_loss {first['mlm_loss']:.4f} (step {first['step']}) → "
                     f"{last['mlm_loss']:.4f} (step {last['step']})")
    if first_eval is not None and last_eval is not None:
        a, b = first_eval, last_eval
        progress.message(f"  {b['split']} mlm_loss {a['mlm_loss']:.4f} (step {a['step']}) → {b['mlm_loss']:.4f} "
                         f"(step {b['step']}); MLM accuracy {b['mlm_accuracy']:.2%} vs "
                         f"{b['unigram_accuracy']:.2%} unigram baseline")
    from trainer.plot import plot_run

    try:
        progress.message(f"wrote {plot_run(run)}")
    except ConfigError as e:
        progress.message(f"no plot: {str(e).removeprefix('mlm-data error: ')}")


def _make_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource], *,
                 split: str, shuffle: bool = True, num_workers: int | None = None) -> ShardLoader:
    d = cfg.data
    return ShardLoader(
        sources, split=split, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
        rank=ctx.rank, world_size=ctx.world_size,
        num_workers=d.num_workers if num_workers is None else num_workers,
        masking=d.masking, shuffle=shuffle, shuffle_window_shards=d.shuffle_window_shards,
        length_bucketing=d.length_bucketing and shuffle, pad_to_multiple_of=d.pad_to_multiple_of,
        cache_dir=d.cache_dir, prefetch_shards=d.prefetch_shards, max_cache_bytes=d.max_cache_bytes,
        pin_memory=ctx.device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
    )


def _make_eval_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource],
                      progress: Progress) -> ShardLoader | None:
    """A loader over the eval split of the sources that have one; says once if some do not."""
    split = cfg.data.eval_split
    having = [s for s in sources if split in Manifest.load(s.path).splits]
    missing = [s.path for s in sources if s not in having]
    if missing:
        progress.message(f"note: no {split!r} split in {', '.join(missing)}; "
                    + ("evaluating on the other sources" if having else "training without evaluation"))
    if not having:
        return None
    # In-process reading: an evaluation is short, worker start-up would dominate it.
    return _make_loader(cfg, ctx, having, split=split, shuffle=False, num_workers=0)


def _restore_loader(loader: ShardLoader, state: dict[str, Any], ctx: distributed.Context, *, source: str) -> None:
    # The loader's position is global (the same on every rank), but which rows a rank reads
    # depends on the number of ranks: another number would silently change the batches.
    if state.get("world_size") != ctx.world_size:
        raise ConfigError(f"{source}: the checkpoint was written by {state.get('world_size')} rank(s); resume "
                          f"it with the same number of processes (this run has {ctx.world_size})")
    loader.load_state_dict(state)


def _to_yaml(data: dict[str, Any]) -> bytes:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")
