"""The dataset's last step as plain functions: every bucket's outcome in, the manifest out.

Buckets are written by ``stages.write_bucket`` (a ``WrittenBucket`` each). ``assemble`` turns every bucket's outcome and every stage's tallies into the manifest's
content, and refuses to publish a dataset whose accounting does not balance or that holds no
rows. ``publish`` writes ``run.json``, then the manifest (last: only now is the directory a
dataset), then removes files of earlier runs that the manifest does not list
(``publication.publish``, under the run's writer lease). The pipeline's DoFns call these and
nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlm_data import __version__, storage
from mlm_data.accounting import Counts
from mlm_data.config.loading import to_dict
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.dataset import publication, stats
from mlm_data.dataset.manifest import ShardEntry, build_manifest_data, manifest_bytes
from mlm_data.dataset.schema import SCHEMA_VERSION
from mlm_data.errors import DatasetError, InputError
from mlm_data.instances.bucket_rows import INSTANCES_VERSION
from mlm_data.reading.input_files import Inputs
from mlm_data.reading.records import FileProblem
from mlm_data.storage.lease import LeaseTicket
from mlm_data.text.tokenizer import TokenizerInfo

#: Beside the manifest: facts about the run that do not shape the data (where the input was
#: read from), so they stay out of ``manifest.json`` and out of the determinism contract.
RUN_NAME = "run.json"

#: One stage's tallies for one batch: documents, file problems, and other counts by name.
Summary = tuple[Counts, list[FileProblem], dict[str, int]]


@dataclass
class WrittenBucket:
    """What the manifest needs from one bucket: its shards, tallies and row statistics."""

    split: str
    shards: list[ShardEntry]
    counts: Counts
    stats: dict[str, Any]
    chunks_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Document chunks that made no row, by reason (``instances.pairing``)."""


def recorded_config(cfg: PreprocessConfig, inputs: Inputs) -> dict[str, Any]:
    """The config as the manifest records it: what shaped the data, not where it was read
    from or written to, so the same input in two places, written to two places, gives
    byte-identical manifests. Input patterns are kept relative to their fixed prefix."""
    data = to_dict(cfg)
    data["input"]["paths"] = list(inputs.patterns)
    data["output"] = {k: v for k, v in data["output"].items() if k not in ("path", "overwrite")}
    return data


def assemble(cfg: PreprocessConfig, tokenizer: TokenizerInfo, *, inputs: Inputs, id_dtype: str,
             buckets: Sequence[WrittenBucket], summaries: Sequence[Summary],
             labels: list[str] | None) -> dict[str, Any]:
    """The manifest's content, once every bucket is written.

    Raises ``DatasetError`` when documents read != written + dropped (a runner lost output
    between stages: the dataset would be incomplete) and ``InputError`` when no row was made.
    """
    total = Counts.total([c for c, _, _ in summaries] + [b.counts for b in buckets])
    if not total.balanced():
        raise DatasetError(
            f"{cfg.output.path}: not published: {total.read} documents read but {total.written} written and "
            f"{sum(total.dropped.values())} dropped; the runner lost output between stages, so the "
            "dataset would be incomplete. Re-run, or use another runner"
        )
    shards = [s for b in buckets for s in b.shards]
    if not shards:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(total.dropped.items())) or "none"
        raise InputError(
            f"{', '.join(cfg.input.paths)}: no training rows were produced ({total.read} documents read, "
            f"dropped: {dropped}); check input.format, input.text_field and the clean.* limits"
        )
    facts: dict[str, int] = {}
    for _, _, f in summaries:
        for k, v in f.items():
            facts[k] = facts.get(k, 0) + v
    per_split: dict[str, list[dict[str, Any]]] = {}
    for b in buckets:
        if b.shards:
            per_split.setdefault(b.split, []).append(b.stats)
    chunks_dropped = stats.merge(sorted((b.chunks_dropped for b in buckets if b.chunks_dropped), key=str))
    problems = sorted(({"file": p.name, "reason": p.reason, "detail": p.detail} for _, ps, _ in summaries for p in ps),
                      key=lambda p: (p["file"], p["reason"]))
    return build_manifest_data(
        task=cfg.instances.task,
        schema_version=SCHEMA_VERSION,
        instances_version=INSTANCES_VERSION,
        id_dtype=id_dtype,
        ipc_format=cfg.output.ipc_format,
        max_seq_length=cfg.instances.max_seq_length,
        static_masking=cfg.masking.enabled,
        tokenizer=tokenizer.as_manifest(publication.tokenizer_name(tokenizer.sha256)),
        config=recorded_config(cfg, inputs),
        shards=shards,
        counts={**total.as_manifest(),
                **({"chunks_dropped": dict(sorted(chunks_dropped.items()))} if chunks_dropped else {}),
                **({"tokenization": dict(sorted(facts.items()))} if facts else {})},
        files={"listed": inputs.num_files, "problems": problems},
        stats={k: stats.merge(sorted(v, key=_stats_order)) for k, v in per_split.items()},
        labels=labels,
        created_by=f"mlm-data {__version__}",
    )


def publish(root: str, manifest: dict[str, Any], *, inputs: Inputs, lease: LeaseTicket | None) -> None:
    """``run.json``, then ``manifest.json`` (the dataset exists from now on), then stale files go
    (``publication.publish``); nothing if the run no longer holds the output's ``lease``.

    ``run.json`` names the sha256 of the manifest it belongs to: a run that fails between the
    two leaves a ``run.json`` that visibly does not describe the manifest beside it.
    """
    if lease is not None:
        lease.check("publishing the manifest")
    run = {"manifest_sha256": hashlib.sha256(manifest_bytes(manifest)).hexdigest(), "inputs": list(inputs.absolute)}
    storage.write_bytes(storage.join(root, RUN_NAME), (json.dumps(run, indent=2, ensure_ascii=False) + "\n").encode())
    publication.publish(root, manifest, lease=lease)


def _stats_order(s: dict[str, Any]) -> tuple[int, int]:
    # Merging is addition, so order does not change the result; sorting keeps it reproducible
    # even for floating-point fields.
    return (int(s.get("rows", 0)), int(s.get("tokens", 0)))
