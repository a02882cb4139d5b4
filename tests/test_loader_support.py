"""Datasets and helpers shared by the loader tests (no tests here).

Datasets are built once per session, whichever test module asks first, from real demo pages
with the 2k test vocabulary: small enough that building all of them takes a few seconds.
Tasks the pipeline does not build yet (token and sequence classification) are written directly
with the core's shard writer and manifest builder.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from mlm_data.dataset.manifest import Manifest, build_manifest_data, write_manifest
from mlm_data.dataset.schema import SCHEMA_VERSION, schema_for
from mlm_data.dataset.shard_writer import ShardWriter
from mlm_data.dataset.shards import decode_table, fetch_shard, list_array
from mlm_data.instances.bucket_rows import INSTANCES_VERSION
from mlm_data.text.tokenizer import describe, parse_tokenizer
from trainer.loading.loader import DataSource, ShardLoader
from trainer.loading.options import LoaderOptions

from conftest import TOKENIZER, demo_documents, write_corpus

_BUILT: dict[str, Path] = {}
_OPTIONS = {f.name for f in dataclasses.fields(LoaderOptions)}


def open_loader(sources: Sequence[DataSource | str | Path], **kw: Any) -> ShardLoader:
    """``ShardLoader(sources, ...)`` with the keywords that name ``LoaderOptions`` fields
    (``num_workers=2``, ``cache_dir=...``) gathered into its ``options``."""
    options = LoaderOptions(**{k: kw.pop(k) for k in list(kw) if k in _OPTIONS})
    return ShardLoader([s if isinstance(s, DataSource) else DataSource(str(s)) for s in sources],
                       options=options, **kw)

#: name -> (first document, number of documents, pipeline fields)
DATASETS: dict[str, tuple[int, int, dict[str, Any]]] = {
    "nsp": (0, 24, {"instances.task": "mlm_nsp", "instances.max_seq_length": 64, "output.num_buckets": 5,
                    "output.validation_fraction": 0.1}),
    "fullsent": (24, 24, {"instances.task": "mlm_fullsent", "instances.max_seq_length": 64,
                          "output.num_buckets": 4}),
    "docsent": (48, 16, {"instances.task": "mlm_docsent", "instances.max_seq_length": 64,
                         "output.num_buckets": 3}),
    "causal": (0, 16, {"instances.task": "causal_lm", "instances.max_seq_length": 64, "output.num_buckets": 3}),
    "static": (0, 16, {"instances.task": "mlm_nsp", "instances.max_seq_length": 64, "output.num_buckets": 3,
                       "masking.enabled": True}),
}


def dataset(name: str, tmp_path_factory: pytest.TempPathFactory, preprocess: Callable[..., Any]) -> Path:
    """The dataset ``name``, built on first use and shared for the rest of the session."""
    if name not in _BUILT:
        first, count, fields = DATASETS[name]
        corpus = write_corpus(tmp_path_factory.mktemp(f"corpus-{name}"), [demo_documents(count, start=first)])
        out = tmp_path_factory.mktemp("datasets") / name
        preprocess(str(corpus), out, **fields)
        _BUILT[name] = out
    return _BUILT[name]


def labelled_dataset(root: Path, task: str, *, rows: int = 90, shards: int = 3, seed: int = 0) -> Path:
    """A token- or sequence-classification dataset written with the core's writer."""
    text = TOKENIZER.read_text(encoding="utf-8")
    info = describe(parse_tokenizer(text, source=str(TOKENIZER)), text)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TOKENIZER, root / "tokenizer.json")
    rng = np.random.default_rng(seed)
    schema = schema_for(task, vocab_size=info.vocab_size)
    id_type = schema.field("input_ids").type.value_type
    lengths = rng.integers(5, 30, size=rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(10, info.vocab_size, size=int(offsets[-1]))
    ids[offsets[:-1]] = info.special.cls
    ids[offsets[1:] - 1] = info.special.sep
    columns: dict[str, pa.Array] = {"input_ids": list_array(ids, offsets, id_type)}
    if task == "token_classification":
        word_start = rng.random(len(ids)) < 0.7
        labels = rng.integers(0, 5, size=len(ids))
        labels[offsets[:-1]] = labels[offsets[1:] - 1] = -100
        columns["word_start"] = list_array(word_start, offsets, pa.bool_())
        columns["labels"] = list_array(labels, offsets, pa.int16())
        names = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    else:
        seg = np.where(rng.random(rows) < 0.5, lengths // 2, 0)
        columns["segment_b_start"] = pa.array([int(s) if s else None for s in seg], type=pa.uint16())
        columns["label"] = pa.array(rng.integers(0, 3, size=rows).astype(np.int32))
        names = ["negative", "neutral", "positive"]
    for f in schema:  # columns this test does not care about (e.g. provenance ids): zeros
        if f.name not in columns:
            columns[f.name] = pa.array(np.zeros(rows, dtype=f.type.to_pandas_dtype()), type=f.type)
    table = pa.Table.from_pydict(columns, schema=schema)
    entries = []
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
        with ShardWriter(str(root), split="train", bucket=i, target_bytes=1 << 40,
                         id_itemsize=np.dtype(id_type.to_pandas_dtype()).itemsize) as writer:
            writer.write(table.slice(lo, hi - lo), np.asarray(lengths[lo:hi]))
            entries += writer.close()
    data = build_manifest_data(
        task=task, schema_version=SCHEMA_VERSION, instances_version=INSTANCES_VERSION, id_dtype=str(id_type),
        max_seq_length=32, static_masking=False,
        tokenizer=info.as_manifest("tokenizer.json"), config={}, shards=entries,
        counts={"documents_read": rows, "documents_written": rows, "documents_dropped": {}},
        files={"listed": 0, "problems": []}, stats={}, labels=names, created_by="tests")
    write_manifest(str(root), data)
    return root


def read_rows(root: Path | str, split: str = "train") -> pa.Table:
    """Every row of a split in manifest order (row id = index), read independently of the loader."""
    m = Manifest.load(str(root))
    return pa.concat_tables([
        decode_table(fetch_shard(m.url(s.path), num_bytes=s.num_bytes, sha256=s.sha256), source=s.path)
        for s in m.shards_for(split)])


def take(batches: Iterable[dict[str, torch.Tensor]], n: int) -> list[dict[str, torch.Tensor]]:
    """The next ``n`` batches, pulling no more than that (the loader's state counts pulls)."""
    it = iter(batches)
    return [next(it) for _ in range(n)]


def real_rows(batches: Iterable[dict[str, torch.Tensor]]) -> np.ndarray:
    """Row ids of the real (not padding) samples of ``batches``, in order."""
    return np.concatenate([b["row_id"][b["sample_mask"]].numpy() for b in batches])


def assert_same_batches(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), i
        for k in x:
            assert torch.equal(x[k], y[k]), f"batch {i}, {k}"


def flip_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def iter_epoch(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Exactly one epoch of an endless loader, from its current state."""
    it = iter(loader)
    for _ in range(loader.steps_per_epoch):
        yield next(it)
