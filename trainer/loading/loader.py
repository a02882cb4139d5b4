"""The trainer's data loader: exact, deterministic, resumable batches straight from shards.

``ShardLoader`` streams collated batches for one rank. Which rows a batch holds is a pure
function of ``(seed, epoch, position)`` (``trainer.loading.sample_order``), so batches do not depend on the
number of DataLoader workers, and ``state_dict`` is two integers plus what is needed to check
that a resumed run reads the same data the same way. Every row of the split is seen exactly
once per epoch across all ranks, with no divisibility requirement: the last step of an epoch
pads with repeated rows whose ``sample_mask`` is False and whose labels are ``-100``.

Worker ``w`` of ``n`` builds global batches ``k ≡ w (mod n)`` counted from the resume point;
torch's DataLoader hands them to the main process in ``k`` order, and only the main process
advances the state, counting batches delivered to the caller rather than batches prefetched.
Shards reach workers through a local, verified, size-bounded cache (``trainer.loading.shard_cache``)
and are read through memory maps (``trainer.loading.shard_reader``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mlm_data import scratch
from mlm_data.dataset.compatibility import MIX, Made, check_alike
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.schema import MLM_TASKS
from mlm_data.errors import ConfigError
from mlm_data.lifetime import ProcessId, bind_to
from trainer.loading.options import LoaderOptions
from trainer.loading.producer import (
    BatchStream,
    LoaderSpec,
    Producer,
    SourceSpec,
    as_is,
    fingerprint,
    produce,
    to_torch,
)
from trainer.loading.sample_order import batch_cursor

log = logging.getLogger(__name__)
STATE_FORMAT = "mlm-data/loader-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class DataSource:
    path: str            # dataset root: local path or fsspec URL (s3://, gs://, memory://)
    weight: float = 1.0  # mixing weight when several sources are given


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def _remove_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked worker
        shutil.rmtree(path, ignore_errors=True)


class ShardLoader:
    """Endless, deterministic stream of collated batches for ONE rank.

    Batches are dicts of tensors named as HF ``transformers`` models expect (``input_ids``,
    ``attention_mask``, ``token_type_ids``, ``labels``, ``next_sentence_label`` ...), plus
    ``sample_mask`` (False on padding rows of an epoch's last step) and ``row_id`` (the global
    row index, for debugging and accounting). Token-classification batches also carry
    ``word_start``, ``example_id`` and ``window_index``, so an evaluator can score whole
    sentences of words (``trainer.evaluation.classifier``). ``hf_inputs(batch)``
    (``trainer.loading.hf_batch``) is the part a transformers model takes. ``iter(loader)``
    continues from the current state; ``state_dict()`` after ``k`` delivered batches resumes at batch ``k + 1``.

    Several sources are mixed by weight into one endless stream (each cycling through its own
    epochs; ``rows_per_epoch`` is then the sum of their rows, a unit of counting).

    ``options`` says how to read (workers, shuffle window, padding, cache, masking, ...: see
    ``trainer.loading.options.LoaderOptions``, which a training config's ``data`` section is).
    The other arguments are what differs between two loaders of one run: the split, whether to
    shuffle (evaluation reads in order), this rank's place, and for torch's DataLoader
    ``pin_memory`` and ``multiprocessing_context``.
    """

    def __init__(self, sources: Sequence[DataSource | str], *, split: str = "train", batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, options: LoaderOptions = LoaderOptions(),  # noqa: B008 (frozen)
                 shuffle: bool = True, pin_memory: bool = False, multiprocessing_context: str | None = None) -> None:
        sources = [DataSource(s) if isinstance(s, str) else s for s in sources]
        _check_arguments(sources, batch_size=batch_size, rank=rank, world_size=world_size, options=options)
        resolved = tuple(_resolve(s, split) for s in sources)
        check_alike(resolved[0].made, [s.made for s in resolved[1:]], purpose=MIX)
        self.split, self.seed, self.num_workers = split, seed, options.num_workers
        # Pinning needs an accelerator; without one it is a no-op (as torch's DataLoader does).
        self.pin_memory = pin_memory and _has_accelerator()
        self.multiprocessing_context = multiprocessing_context
        self.manifest = resolved[0].manifest
        self.task = self.manifest.task
        self.vocab_size = self.manifest.vocab_size
        self.special_tokens = self.manifest.special_tokens
        self.labels = self.manifest.labels
        self.max_seq_length = max(s.manifest.max_seq_length for s in resolved)
        if options.masking is not None and self.manifest.static_masking and self.task in MLM_TASKS:
            log.info("%s: dataset is statically masked; labels come from the stored masks, no dynamic masking",
                     self.manifest.root)
        self._owned_cache: str | None = None
        cache_dir = options.cache_dir
        if cache_dir is None:
            cache_dir = self._owned_cache = scratch.make_dir("mlm-data-shards-")
            weakref.finalize(self, _remove_dir, cache_dir, os.getpid())
        self._spec = LoaderSpec(
            sources=resolved, seed=seed, batch_size=batch_size, rank=rank, world_size=world_size, shuffle=shuffle,
            max_seq_length=self.max_seq_length,
            options=replace(options, cache_dir=cache_dir,
                            fuse_batches=options.fused_batches(batch_size, self.max_seq_length)))
        self.rows_per_epoch = sum(s.num_rows for s in resolved)
        self.steps_per_epoch = math.ceil(self.rows_per_epoch / self._spec.global_batch)
        self._mixed = len(resolved) > 1
        self._cursor = (0, 0)
        self._generation = 0
        self._producers: dict[bool, Producer] = {}
        log.info("ShardLoader: %d %s rows in %d shard(s) from %d source(s); rank %d of %d, batch %d, "
                 "%d steps per epoch, %d worker(s)", self.rows_per_epoch, split,
                 sum(len(s.shards) for s in resolved), len(resolved), rank, world_size, batch_size,
                 self.steps_per_epoch, self.num_workers)

    @property
    def datasets(self) -> list[Made]:
        """How each source was made (``mlm_data.dataset.compatibility``), in order."""
        return [s.made for s in self._spec.sources]

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._cursor[0]

    # -- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._generation += 1
        return self._deliver(self._cursor, concatenated=False, limit=None, wrap=not self._mixed,
                             generation=self._generation)

    def one_epoch(self, *, epoch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """One exact pass over the split (all sources concatenated), for evaluation.

        Unshuffled unless the loader shuffles; masks are keyed by ``epoch`` so evaluation
        batches are identical from run to run. The loader's state does not change.
        """
        limit = math.ceil(self.rows_per_epoch / self._spec.global_batch)
        return self._deliver((epoch, 0), concatenated=True, limit=limit, wrap=True, generation=None)

    def _deliver(self, start: tuple[int, int], *, concatenated: bool, limit: int | None, wrap: bool,
                 generation: int | None) -> Iterator[dict[str, torch.Tensor]]:
        if self.num_workers == 0:
            producer = self._producers.get(concatenated)
            if producer is None:
                producer = self._producers[concatenated] = Producer(self._spec, concatenated=concatenated)
            source: Iterator[tuple[int, dict[str, np.ndarray]]] = produce(
                producer, start, first=0, every=1, limit=limit, wrap=wrap, fuse=self._spec.fuse)
        else:
            stream = BatchStream(self._spec, start, concatenated=concatenated, limit=limit, wrap=wrap)
            # Pinned batches come as tensors (shared memory), pinned by DataLoader's own thread.
            source = iter(DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                     collate_fn=None if self.pin_memory else as_is, pin_memory=self.pin_memory,
                                     multiprocessing_context=self.multiprocessing_context,
                                     worker_init_fn=functools.partial(_die_with, ProcessId.current())))
        rows = self.rows_per_epoch
        try:
            for expected, (k, batch) in enumerate(source):
                if k != expected:
                    raise RuntimeError(f"internal error: batch {k} arrived where {expected} was due")
                if generation is not None:
                    if generation != self._generation:
                        raise RuntimeError("this iterator is stale: load_state_dict() or a newer iter(loader) "
                                           "replaced it; call iter(loader) again")
                    self._cursor = batch_cursor(start, k + 1, rows=rows, global_batch=self._spec.global_batch,
                                                wrap=wrap)
                yield to_torch(batch, pin=self.pin_memory and self.num_workers == 0)
        finally:
            close = getattr(source, "close", None) or getattr(source, "_shutdown_workers", None)
            if close is not None:
                close()

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: where the next batch starts and what it must be read from."""
        spec, options = self._spec, self._spec.options
        epoch, position = self._cursor
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "epoch": epoch, "position": position, "step": -(-position // spec.global_batch),
            "steps_per_epoch": self.steps_per_epoch, "rows_per_epoch": self.rows_per_epoch,
            "seed": self.seed, "split": self.split,
            "batch_size": spec.batch_size, "world_size": spec.world_size,
            "shuffle": spec.shuffle, "shuffle_window_shards": options.shuffle_window_shards,
            "length_bucketing": options.length_bucketing, "mix_block_size": options.mix_block_size,
            "masking": asdict(options.masking) if options.masking is not None else None,
            "sources": [{"path": s.path, "weight": s.weight, "fingerprint": s.fingerprint, "rows": s.num_rows}
                        for s in spec.sources],
        }

    def load_state_dict(self, state: Mapping[str, Any], *, allow_geometry_change: bool = False) -> None:
        """Continue from ``state``; raise ``ConfigError`` naming every incompatibility.

        ``allow_geometry_change`` accepts another batch size or world size: the epoch being
        resumed still visits each of its remaining rows exactly once (batches differ, of course).
        """
        mine = self.state_dict()
        errors = []
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"loader state: not a {STATE_FORMAT} dict (found {type(state).__name__})")
        if state.get("version") != STATE_VERSION:
            errors.append(f"version: state has {state.get('version')!r}, this loader reads {STATE_VERSION}")
        for key in ("seed", "split", "shuffle", "shuffle_window_shards", "length_bucketing", "mix_block_size",
                    "masking"):
            if state.get(key) != mine[key]:
                errors.append(f"{key}: state has {state.get(key)!r}, this loader has {mine[key]!r}")
        theirs = state.get("sources") or []
        if len(theirs) != len(mine["sources"]):
            errors.append(f"sources: state has {len(theirs)}, this loader has {len(mine['sources'])}")
        for i, (a, b) in enumerate(zip(theirs, mine["sources"])):
            if a.get("fingerprint") != b["fingerprint"]:
                errors.append(f"sources[{i}]: dataset {b['path']} differs from the one in the state "
                              f"({a.get('path')}): shards, tokenizer, task or split changed")
            if a.get("weight") != b["weight"]:
                errors.append(f"sources[{i}].weight: state has {a.get('weight')!r}, this loader has {b['weight']!r}")
        geometry = [k for k in ("batch_size", "world_size") if state.get(k) != mine[k]]
        if geometry and not allow_geometry_change:
            errors += [f"{k}: state has {state.get(k)!r}, this loader has {mine[k]!r} (pass "
                       "allow_geometry_change=True to continue the epoch with the new geometry)" for k in geometry]
        elif geometry and mine["length_bucketing"] and \
                state.get("batch_size", 0) * state.get("world_size", 0) != self._spec.global_batch:
            errors.append("batch_size * world_size: length buckets follow the global batch, which must not change")
        epoch, position = state.get("epoch"), state.get("position")
        if not (isinstance(epoch, int) and epoch >= 0 and isinstance(position, int)
                and 0 <= position < self.rows_per_epoch):
            errors.append(f"epoch/position: expected integers with 0 <= position < {self.rows_per_epoch}, "
                          f"found {epoch!r}/{position!r}")
        if errors:
            raise ConfigError("loader state does not fit this loader: " + "; ".join(errors))
        self._cursor = (int(epoch), int(position))  # type: ignore[arg-type]
        self._generation += 1

    def close(self) -> None:
        """Stop background threads and remove the loader's own temporary cache."""
        for producer in self._producers.values():
            producer.close()
        self._producers.clear()
        if self._owned_cache:
            _remove_dir(self._owned_cache, os.getpid())


def _check_arguments(sources: Sequence[DataSource], *, batch_size: int, rank: int, world_size: int,
                     options: LoaderOptions) -> None:
    """The arguments that are not options (those checked themselves when made)."""
    errors = []
    if not sources:
        errors.append("sources: give at least one DataSource")
    for i, s in enumerate(sources):
        if not isinstance(s, DataSource):
            errors.append(f"sources[{i}]: expected a DataSource or a path, found {type(s).__name__}")
        elif not (isinstance(s.weight, (int, float)) and math.isfinite(s.weight) and s.weight > 0):
            errors.append(f"sources[{i}].weight: must be a positive number, found {s.weight!r}")
    for name, value in (("batch_size", batch_size), ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            errors.append(f"{name}: must be an integer >= 1, found {value!r}")
    if not isinstance(rank, int) or not (isinstance(world_size, int) and 0 <= rank < max(world_size, 1)):
        errors.append(f"rank: must be in [0, world_size={world_size}), found {rank!r}")
    if not isinstance(options, LoaderOptions):
        errors.append(f"options: expected LoaderOptions, found {type(options).__name__}")
    elif options.length_bucketing and len(sources) > 1:
        errors.append("length_bucketing: not supported when mixing several sources (a batch mixes datasets)")
    if errors:
        raise ConfigError("ShardLoader: " + "; ".join(errors))


def _resolve(source: DataSource, split: str) -> SourceSpec:
    manifest = Manifest.load(source.path)
    shards = manifest.shards_for(split)
    if not shards or sum(s.num_rows for s in shards) == 0:
        raise ConfigError(f"{source.path}: split {split!r} has no rows; the dataset has "
                          f"{', '.join(manifest.splits) or 'no splits'}")
    return SourceSpec(path=source.path, weight=float(source.weight), manifest=manifest, shards=shards,
                      fingerprint=fingerprint(manifest, split, shards))


def _die_with(owner: ProcessId, _worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ends when the process it loads for does, so a
    killed training run leaves no workers behind (``mlm_data.lifetime``)."""
    bind_to(owner)
