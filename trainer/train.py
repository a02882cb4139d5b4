"""The training loop: one function to read top to bottom, in the spirit of nanoGPT's train.py.

``pretrain(cfg)`` and ``finetune(cfg)`` open the datasets, build the network the dataset's task
calls for (``trainer.models.architectures``: an MLM encoder, a causal decoder or a classifier) from
random weights, from ``cfg.init`` (``trainer.warm_start``) or from the run's newest checkpoint,
then repeat ``train_step`` until ``max_steps``, logging, evaluating and checkpointing on the
way. The two commands differ only in the tasks they accept and in what they leave behind: a
fine-tuning run also writes its final evaluation to ``RUN/eval.json``. The same code runs alone
or as one of several torchrun ranks.

Exact resume: everything a step computes is a function of the checkpoint and the step number.
The batches come from the loader's saved state, the learning rate from ``lr_at(step)``, and
dropout from a generator re-seeded before every micro-step with ``dropout_seed(seed, step,
micro, rank)``. A run stopped at step k and resumed therefore reproduces the uninterrupted
run's losses bit for bit on the CPU in fp32, whatever ``num_workers`` either used.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mlm_data import storage
from mlm_data.config.loading import to_dict
from mlm_data.dataset.manifest import TOKENIZER_NAME
from mlm_data.dataset.schema import IGNORE_INDEX, LABELLED_TASKS, MLM_TASKS
from mlm_data.errors import ConfigError, MlmDataError
from mlm_data.seeding import derive_key
from mlm_data.storage.uploads import abort_unfinished_uploads
from mlm_data.text.tokenizer import dataset_tokenizer_text
from trainer import checkpoint, distributed, tensorboard_log, warm_start
from trainer.config import (
    PretrainConfig,
    TrainConfig,
    check_resume_compatible,
    parse_source,
    resolve_for_dataset,
    resolve_steps,
)
from trainer.evaluation.classifier import evaluate_labels
from trainer.evaluation.language_model import evaluate, evaluate_lm
from trainer.loading.loader import DataSource, ShardLoader
from trainer.loading.run_loaders import (
    check_resume_data,
    make_eval_loader,
    make_loader,
    restore_loader,
)
from trainer.models.architectures import build_model
from trainer.models.encoder import ModelOutput
from trainer.optim import build_optimizer, lr_at, warmup_warning
from trainer.precision import Precision
from trainer.reporting import StepStats, describe_evaluation, finish, train_record
from trainer.run_log import MetricsLog, Progress
from trainer.step_inputs import StepInputs

CONFIG_NAME = "config.yaml"
EVAL_NAME = "eval.json"
#: Evaluation keys too bulky for metrics.jsonl; eval.json keeps them.
_DETAIL = ("per_type", "per_label")
#: The dataset tasks each command trains.
COMMAND_TASKS = {"pretrain": (*MLM_TASKS, "causal_lm"), "finetune": LABELLED_TASKS}


@dataclass(frozen=True)
class RunResult:
    run: str
    step: int
    """Optimizer steps completed."""
    model: torch.nn.Module
    """The trained model (on this rank's device)."""
    first: dict[str, Any] | None
    """The first train record this invocation logged."""
    last: dict[str, Any] | None
    """The last train record this invocation logged."""
    evaluation: dict[str, Any] | None
    """The last evaluation's record (None without held-out data)."""


def dropout_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of the global torch generator for one micro-step's dropout."""
    return derive_key(seed, "dropout", step, micro, rank)


class TrainingDiverged(MlmDataError):
    """The loss became NaN or infinite: the run cannot usefully go on."""


def step_figures(out: Any) -> torch.Tensor:
    """``(loss, mlm_loss, nsp_loss, correct, count)`` of one micro-batch, whatever the model:
    the MLM parts are zero for the others, ``correct`` counts argmax hits on the targets and
    ``count`` the targets (padding rows of a fixed-size gather, labelled -100, are neither).
    All on the device: nothing here makes the host wait."""
    if isinstance(out, ModelOutput):
        nsp = out.nsp_loss if out.nsp_loss is not None else out.loss.new_zeros(())
        mlm, targets = out.mlm_loss, out.mlm_labels
    else:
        mlm = nsp = out.loss.new_zeros(())
        targets = out.labels
    correct = (out.logits.argmax(-1) == targets).sum()
    count = (targets != IGNORE_INDEX).sum()
    return torch.stack([out.loss, mlm, nsp, correct.float(), count.float()])


def train_step(net: torch.nn.Module, batches: Iterator[Mapping[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, *, step: int, cfg: TrainConfig, rank: int,
               prepare: StepInputs, precision: Precision) -> StepStats:
    """One optimizer step: ``grad_accum`` micro-batches of forward and backward, clip, update.

    ``net`` is ``precision.compute`` (compiled, in DDP, as the run has it); the optimizer
    updates ``precision.master``. Figures stay on the device until a log step reads them."""
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    sums = torch.zeros(5, device=prepare.device)
    tokens = 0
    for micro in range(cfg.grad_accum):
        inputs, n_tokens = prepare(next(batches))
        tokens += n_tokens
        torch.manual_seed(dropout_seed(cfg.seed, step, micro, rank))
        # DDP averages gradients across ranks on the last micro-batch only.
        last = micro == cfg.grad_accum - 1
        with nullcontext() if last or not isinstance(net, DistributedDataParallel) else net.no_sync():
            with precision.autocast():
                out = net(**inputs)
            (out.loss / cfg.grad_accum).backward()
        with torch.no_grad():
            sums += step_figures(out)
    precision.grads_to_master()
    grad_norm = None
    if cfg.clip_grad_norm is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(precision.master.parameters(), cfg.clip_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    precision.master_to_compute()
    return StepStats(sums, tokens, grad_norm, lr)


def pretrain(cfg: PretrainConfig, *, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train the run in ``cfg.output`` with MLM (+NSP) or next-token loss, as the dataset's task
    says; with ``cfg.init``, continue from those weights (domain adaptation). ``resume``
    continues the run from its newest checkpoint, ``overwrite`` starts it afresh even if the
    folder holds an earlier run's checkpoints."""
    return _train(cfg, "pretrain", resume=resume, overwrite=overwrite)


def finetune(cfg: PretrainConfig, *, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Fine-tune on a token- or sequence-classification dataset, from ``cfg.init`` (an encoder
    of ours or a HF BERT) or from scratch; the final evaluation also goes to ``RUN/eval.json``."""
    return _train(cfg, "finetune", resume=resume, overwrite=overwrite)


def _train(cfg: PretrainConfig, command: str, *, resume: bool, overwrite: bool) -> RunResult:
    ctx = distributed.setup(cfg.train.device)
    with ExitStack() as cleanup:
        cleanup.callback(distributed.teardown)
        return _run(cfg, ctx, command=command, resume=resume, overwrite=overwrite, cleanup=cleanup)


def _run(cfg: PretrainConfig, ctx: distributed.Context, *, command: str, resume: bool, overwrite: bool,
         cleanup: ExitStack) -> RunResult:
    if not cfg.output:
        raise ConfigError("output: no run folder given; pass --output RUN")
    if not cfg.data.sources:
        raise ConfigError("data.sources: nothing to train on; pass --data DATASET")
    run, source = cfg.output, cfg.data.sources[0]
    saved = checkpoint.resume_point(run) if resume else None
    # An earlier run's checkpoints go only once this one has everything it needs (data, init,
    # config, model): a mistyped --data must never cost them.
    replaced = checkpoint.list_checkpoints(run) if saved is None else []
    if replaced and not overwrite:
        raise ConfigError(f"{run}: already holds checkpoints; continue it with --resume {run}, "
                          "replace it with --overwrite, or choose another --output")

    # ---- data, and the config fields only the data (and the init) know
    sources = [DataSource(*parse_source(s)) for s in cfg.data.sources]
    loader = make_loader(cfg, ctx, sources, split="train")
    cleanup.callback(loader.close)
    if saved is not None:
        check_resume_data(loader, saved, run=run)
    task, manifest = loader.task, loader.manifest
    tokenizer = dataset_tokenizer_text(manifest)  # the run folder keeps a copy: generate and export read it
    if task not in COMMAND_TASKS[command]:
        other = next(c for c, tasks in COMMAND_TASKS.items() if task in tasks)
        raise ConfigError(f"{source}: task {task!r} is not for `mlm-train {command}` (it trains "
                          f"{', '.join(COMMAND_TASKS[command])}); use `mlm-train {other}`")
    init = warm_start.open_init(cfg.init) if cfg.init and saved is None else None
    if init is not None:
        cfg = replace(cfg, model=warm_start.adopt_architecture(cfg.model, init))
        warm_start.check_tokenizer(init, manifest, source=source)
    cfg = resolve_for_dataset(cfg, vocab_size=loader.vocab_size, task=task, max_seq_length=loader.max_seq_length,
                              num_labels=len(loader.labels) if loader.labels else None, source=source)
    cfg = resolve_steps(cfg, steps_per_epoch=loader.steps_per_epoch)
    t = cfg.train
    if saved is not None:
        check_resume_compatible(saved["config"], to_dict(cfg), source=run)
    progress = Progress(t.max_steps, enabled=ctx.is_main)
    if (warning := warmup_warning(t)) is not None:
        progress.message(warning)
    eval_loader, eval_desc = make_eval_loader(cfg, ctx, sources, manifest, progress)
    if eval_loader is not None:
        cleanup.callback(eval_loader.close)
    elif command == "finetune":
        raise ConfigError(f"{source}: no {cfg.data.eval_split!r} split to evaluate on; pass --eval-data DATASET "
                          "or preprocess with --set output.validation_fraction=0.1")

    # ---- model and optimizer: fresh, warm-started or restored
    torch.manual_seed(t.seed)
    model = build_model(cfg.model)
    if init is not None:
        progress.message(warm_start.load_into(model, init))
    model = model.to(ctx.device)
    optimizer = build_optimizer(model, t, device=ctx.device)
    step = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        restore_loader(loader, saved["loader"], ctx, source=run)
        step = saved["step"]
    if ctx.is_main:  # the new run starts here: an earlier one's checkpoints go first
        if resume or overwrite:  # uploads a killed earlier run left unfinished (mlm_data.storage.uploads)
            abort_unfinished_uploads(run)
        for _, url in replaced:
            storage.remove(url)
        storage.write_bytes(storage.join(run, CONFIG_NAME), _to_yaml(to_dict(cfg)))
        storage.write_bytes(storage.join(run, TOKENIZER_NAME), tokenizer.encode("utf-8"))
    metrics = MetricsLog(run, resume_step=step if saved is not None else None, enabled=ctx.is_main,
                         tensorboard=tensorboard_log.wanted(t.tensorboard))
    cleanup.callback(metrics.close)
    dataset = {"task": task, "labels": manifest.labels, "tokenizer": dict(manifest.tokenizer)}
    precision = Precision(model, t.precision, ctx.device)
    net = compile_network(precision.compute, t)
    if ctx.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    prepare = StepInputs(ctx.device, masking=cfg.data.masking, sync_free=t.sync_free or t.static_shapes,
                         unpad=t.unpad)
    global_batch = t.batch_size * t.grad_accum * ctx.world_size
    progress.message(f"{'resuming at step ' + str(step) if step else 'training'} {run}: "
                     f"{model.num_parameters() / 1e6:.2f}M parameters, {ctx.world_size} rank(s) on "
                     f"{ctx.device.type}, {precision.name}, global batch {global_batch}, "
                     f"{loader.rows_per_epoch:,} rows per epoch, task {task}")

    def evaluate_at(at_step: int, *, final: bool = False) -> dict[str, Any]:
        # Entity F1 needs whole sentences: a fine-tuning run's last evaluation reads the whole split.
        limit = None if final and command == "finetune" else t.eval_batches
        ev = _evaluate(precision.compute, eval_loader, task=task, labels=manifest.labels, device=ctx.device,
                       amp_dtype=precision.amp_dtype, max_batches=limit)
        record = {"step": at_step, "split": cfg.data.eval_split, **ev}
        metrics.append({k: v for k, v in record.items() if k not in _DETAIL})  # one line per record
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
        stats = train_step(net, batches, optimizer, step=step, cfg=t, rank=ctx.rank, prepare=prepare,
                           precision=precision)
        step += 1
        tokens += stats.tokens
        done = step == t.max_steps
        if step == 1 or step % t.log_every == 0 or done:
            last = train_record(step, stats, tokens, time.perf_counter() - t_last, t, task=task,
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
            evaluation = evaluate_at(step, final=done)
            first_eval = first_eval or evaluation
            tokens, t_last = 0, time.perf_counter()
        if done or (t.save_every and step % t.save_every == 0):
            if ctx.is_main:
                state = checkpoint.build_state(step=step, model=model, optimizer=optimizer,
                                               loader=loader.state_dict(), config=to_dict(cfg), dataset=dataset)
                checkpoint.save(run, state, keep_last=t.keep_last)
            metrics.flush()
            tokens, t_last = 0, time.perf_counter()

    if ctx.is_main:
        wrote = []
        if command == "finetune" and evaluation is not None and step > start_step:
            url = storage.join(run, EVAL_NAME)
            summary = {"task": task, "data": eval_desc, **evaluation}
            storage.write_bytes(url, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
            wrote.append(url)
        finish(run, step, start_step, time.perf_counter() - started, (first, last), (first_eval, evaluation),
               progress, wrote=tuple(wrote))
    return RunResult(run=run, step=step, model=model, first=first, last=last, evaluation=evaluation)


def compile_network(net: torch.nn.Module, t: TrainConfig) -> torch.nn.Module:
    """``net`` through torch.compile in ``t.compile_mode`` when ``t.compile``, else as it is."""
    if not t.compile:
        return net
    return torch.compile(net, mode=None if t.compile_mode == "default" else t.compile_mode)  # type: ignore[return-value]


def _evaluate(model: torch.nn.Module, loader: ShardLoader, *, task: str, labels: list[str] | None,
              device: torch.device, amp_dtype: torch.dtype | None, max_batches: int | None) -> dict[str, Any]:
    batches = loader.one_epoch()
    if task in MLM_TASKS:
        return evaluate(model, batches, device=device, amp_dtype=amp_dtype, max_batches=max_batches)  # type: ignore[arg-type]
    if task == "causal_lm":
        return evaluate_lm(model, batches, device=device, amp_dtype=amp_dtype, max_batches=max_batches)
    return evaluate_labels(model, batches, task=task, labels=labels or [], device=device, amp_dtype=amp_dtype,
                           max_batches=max_batches)


def _to_yaml(data: dict[str, Any]) -> bytes:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")
