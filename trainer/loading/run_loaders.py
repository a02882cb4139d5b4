"""The loaders a training run reads: its training stream and its held-out evaluation split.

Evaluation reads the training datasets' ``data.eval_split`` or, with ``data.eval_sources``
(``--eval-data``), other datasets: a dataset made for evaluation alone usually has only a
``train`` split, which is then the one read. Held-out data must be made the way the training
data was (same task, tokenizer and label list), or the scores would compare unlike things;
every difference is reported at once.
"""

from __future__ import annotations

from typing import Any

from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError
from trainer import distributed
from trainer.config import PretrainConfig, parse_source
from trainer.loading.loader import DataSource, ShardLoader
from trainer.run_log import Progress


def make_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource], *,
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


def make_eval_loader(cfg: PretrainConfig, ctx: distributed.Context, sources: list[DataSource],
                     train: Manifest, progress: Progress) -> tuple[ShardLoader | None, str]:
    """The evaluation loader (None when there is nothing to evaluate on) and what it reads,
    for the log. Says once when some training sources lack the eval split."""
    split = cfg.data.eval_split
    if cfg.data.eval_sources:
        evals = [DataSource(*parse_source(s)) for s in cfg.data.eval_sources]
        manifests = [Manifest.load(s.path) for s in evals]
        check_made_alike(train, manifests)
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
    # In-process reading: an evaluation is short, worker start-up would dominate it.
    loader = make_loader(cfg, ctx, having, split=split, shuffle=False, num_workers=0)
    return loader, f"{split} split of {', '.join(s.path for s in having)}"


def check_made_alike(train: Manifest, others: list[Manifest]) -> None:
    """Refuse held-out datasets whose task, tokenizer or labels differ from the training data's."""
    problems = []
    for m in others:
        if m.task != train.task:
            problems.append(f"{m.root} has task {m.task!r}, {train.root} has {train.task!r}")
        if m.tokenizer.get("sha256") != train.tokenizer.get("sha256"):
            problems.append(f"{m.root} was tokenized with sha256 {_short(m.tokenizer.get('sha256'))}, {train.root} "
                            f"with {_short(train.tokenizer.get('sha256'))}")
        if m.labels != train.labels:
            problems.append(f"{m.root} has labels {_labels(m.labels)}, {train.root} has {_labels(train.labels)} "
                            f"(make it with `mlm-data preprocess ... --labels-from {train.root}`)")
    if problems:
        raise ConfigError("--eval-data must be made like --data (same task, tokenizer and labels):\n"
                          + "\n".join(f"  - {p}" for p in problems))


def restore_loader(loader: ShardLoader, state: dict[str, Any], ctx: distributed.Context, *, source: str) -> None:
    # The loader's position is global (the same on every rank), but which rows a rank reads
    # depends on the number of ranks: another number would silently change the batches.
    if state.get("world_size") != ctx.world_size:
        raise ConfigError(f"{source}: the checkpoint was written by {state.get('world_size')} rank(s); resume "
                          f"it with the same number of processes (this run has {ctx.world_size})")
    loader.load_state_dict(state)


def _short(sha: Any) -> str:
    return f"{str(sha)[:12]}…"


def _labels(labels: list[str] | None) -> str:
    if labels is None:
        return "none"
    return f"[{', '.join(labels[:6])}{', …' if len(labels) > 6 else ''}] ({len(labels)})"
