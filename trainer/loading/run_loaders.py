"""The loaders a training run reads: its training stream and its held-out evaluation split.

Evaluation reads the training datasets' ``data.eval_split`` or, with ``data.eval_sources``
(``--eval-data``), other datasets: a dataset made for evaluation alone usually has only a
``train`` split, which is then the one read. Held-out data must be made the way the training
data was (same task, tokenizer and label list), or the scores would compare unlike things;
every difference is reported at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mlm_data.dataset.compatibility import EVALUATE, RESUME, Made, check_alike
from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError
from trainer import distributed
from trainer.config import PretrainConfig, parse_source
from trainer.loading.loader import DataSource, ShardLoader
from trainer.run_log import Progress


def make_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource], *,
                split: str, shuffle: bool = True) -> ShardLoader:
    # train.static_shapes: every batch as wide as the longest row can be.
    options = replace(cfg.data, pad_to_max_length=True) if cfg.train.static_shapes else cfg.data
    return ShardLoader(
        sources, split=split, batch_size=cfg.train.batch_size, seed=cfg.train.seed, rank=ctx.rank,
        world_size=ctx.world_size, options=options, shuffle=shuffle,
        pin_memory=ctx.device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
    )


def make_eval_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource],
                     train: Manifest, progress: Progress) -> tuple[ShardLoader | None, str]:
    """The evaluation loader (None when there is nothing to evaluate on) and what it reads,
    for the log. Says once when some training sources lack the eval split."""
    split = cfg.data.eval_split
    if cfg.data.eval_sources:
        evals = [DataSource(*parse_source(s)) for s in cfg.data.eval_sources]
        manifests = [Manifest.load(s.path) for s in evals]
        check_alike(Made.of(train), [Made.of(m) for m in manifests], purpose=EVALUATE)
        if not all(split in m.splits for m in manifests):
            if not all(m.splits == ["train"] for m in manifests):
                raise ConfigError(f"--eval-data: read the {split!r} split of datasets that have one, or the only split "
                                  "of datasets made for evaluation; these have " + "; ".join(
                                      f"{m.root}: {', '.join(m.splits)}" for m in manifests))
            split = "train"
        having = evals
    else:
        having = [s for s in sources if split in Manifest.load(s.path).splits]
        missing = [s.path for s in sources if s not in having]
        if missing:
            progress.message(f"note: no {split!r} split in {', '.join(missing)}; "
                             + ("evaluating on the other sources" if having else "training without evaluation"))
        if not having:
            return None, ""
    # In-process reading: an evaluation is short, worker start-up would dominate it; in order,
    # so length buckets (a shuffle of batches) do not apply.
    reading = replace(cfg, data=replace(cfg.data, num_workers=0, length_bucketing=False))
    loader = make_loader(reading, ctx, having, split=split, shuffle=False)
    return loader, f"{split} split of {', '.join(s.path for s in having)}"


def check_resume_data(loader: ShardLoader, saved: dict[str, Any], *, run: str) -> None:
    """Refuse to continue a checkpoint on datasets not made like the data it was trained on
    (checkpoints record it; those written before they did are not checked here)."""
    record = saved.get("dataset")
    if record:
        check_alike(Made.from_record(record, where=f"the training data of {run}"), loader.datasets, purpose=RESUME)


def restore_loader(loader: ShardLoader, state: dict[str, Any], ctx: distributed.Context, *, source: str) -> None:
    # The loader's position is global (the same on every rank), but which rows a rank reads
    # depends on the number of ranks: another number would silently change the batches.
    if state.get("world_size") != ctx.world_size:
        raise ConfigError(f"{source}: the checkpoint was written by {state.get('world_size')} rank(s); resume "
                          f"it with the same number of processes (this run has {ctx.world_size})")
    loader.load_state_dict(state)
