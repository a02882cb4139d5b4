"""What a run reports: its train records, one line per evaluation, and the closing summary.

Records keep the names each task's readers expect: MLM runs log ``mlm_loss`` (``nsp_loss``)
and ``mlm_accuracy``; causal-LM runs ``accuracy`` of the next token; token classification
``token_accuracy``; sequence classification ``accuracy``. Evaluations add the task's own scores
and a baseline (unigram for language models, the majority label for classifiers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from mlm_data.dataset.schema import MLM_TASKS
from mlm_data.errors import ConfigError
from trainer import distributed
from trainer.config import TrainConfig
from trainer.evaluation.classifier import describe_labels
from trainer.run_log import Progress, format_duration

#: The train record key of each task's "argmax equals target" rate.
ACCURACY = {"causal_lm": "accuracy", "token_classification": "token_accuracy",
            "sequence_classification": "accuracy", **{t: "mlm_accuracy" for t in MLM_TASKS}}


class StepStats(NamedTuple):
    sums: torch.Tensor
    """``(loss, mlm_loss, nsp_loss, correct, count)`` summed over micro-batches, on the device."""
    tokens: int
    """Non-padding tokens in this step's micro-batches (on this rank)."""
    grad_norm: torch.Tensor | None
    lr: float


def train_record(step: int, stats: StepStats, tokens: int, seconds: float, t: TrainConfig, *, task: str,
                 nsp: bool, world_size: int, steps_per_epoch: int) -> dict[str, Any]:
    """The metrics.jsonl record of a logged step, averaged over micro-batches and ranks."""
    sums = distributed.all_reduce_sum(torch.cat([stats.sums, stats.sums.new_tensor([tokens])])).tolist()
    loss, mlm_loss, nsp_loss, correct, count, all_tokens = sums
    n = t.grad_accum * world_size
    record = {"step": step, "split": "train", "loss": loss / n}
    if task in MLM_TASKS:
        record["mlm_loss"] = mlm_loss / n
        if nsp:
            record["nsp_loss"] = nsp_loss / n
    record[ACCURACY[task]] = correct / max(count, 1.0)
    record["lr"] = stats.lr
    if stats.grad_norm is not None:
        record["grad_norm"] = float(stats.grad_norm)
    record["tokens_per_s"] = all_tokens / max(seconds, 1e-9)
    record["epoch"] = round(step * t.grad_accum / max(steps_per_epoch, 1), 4)
    return record


def describe_evaluation(ev: Mapping[str, Any]) -> str:
    if "mlm_loss" in ev:
        text = (f"eval {ev['split']} @ step {ev['step']}: mlm_loss {ev['mlm_loss']:.4f} "
                f"(perplexity {ev['perplexity']:.1f}), MLM accuracy {ev['mlm_accuracy']:.2%} vs "
                f"{ev['unigram_accuracy']:.2%} unigram baseline")
        if "nsp_accuracy" in ev:
            text += f", NSP accuracy {ev['nsp_accuracy']:.2%}"
        return text + f" [{ev['predictions']:,} masked tokens]"
    if "perplexity" in ev:
        return (f"eval {ev['split']} @ step {ev['step']}: loss {ev['loss']:.4f} (perplexity {ev['perplexity']:.1f}), "
                f"next-token accuracy {ev['accuracy']:.2%} vs {ev['unigram_accuracy']:.2%} unigram baseline "
                f"[{ev['predictions']:,} tokens]")
    return describe_labels(ev)


Records = tuple[dict[str, Any] | None, dict[str, Any] | None]


def finish(run: str, step: int, start_step: int, seconds: float, train: Records, evals: Records,
           progress: Progress, *, wrote: tuple[str, ...] = ()) -> None:
    """The closing summary: where the losses started and ended, the final scores, the plot."""
    (first, last), (first_eval, last_eval) = train, evals
    if first is None or last is None:
        progress.message(f"{run} is already at step {step} (train.max_steps); raise --max-steps to train further")
        return
    progress.message(f"done: steps {start_step}→{step} in {format_duration(seconds)}")
    key = "mlm_loss" if "mlm_loss" in last else "loss"
    progress.message(f"  train {key} {first[key]:.4f} (step {first['step']}) → {last[key]:.4f} (step {last['step']})")
    if first_eval is not None and last_eval is not None:
        a, b = first_eval, last_eval
        if "mlm_loss" in b:
            progress.message(f"  {b['split']} mlm_loss {a['mlm_loss']:.4f} (step {a['step']}) → {b['mlm_loss']:.4f} "
                             f"(step {b['step']}); MLM accuracy {b['mlm_accuracy']:.2%} vs "
                             f"{b['unigram_accuracy']:.2%} unigram baseline")
        elif "perplexity" in b:
            progress.message(f"  {b['split']} loss {a['loss']:.4f} (step {a['step']}) → {b['loss']:.4f} (step "
                             f"{b['step']}, perplexity {b['perplexity']:.1f}); next-token accuracy "
                             f"{b['accuracy']:.2%} vs {b['unigram_accuracy']:.2%} unigram baseline")
        else:
            progress.message("  " + describe_labels(b))
    for url in wrote:
        progress.message(f"wrote {url}")
    from trainer.plot import plot_run

    try:
        progress.message(f"wrote {plot_run(run)}")
    except ConfigError as e:
        progress.message(f"no plot: {str(e).removeprefix('mlm-data error: ')}")
