"""``manifest.json``: the one file that makes a directory a dataset.

It is written last, in one step, only after every shard is complete; readers trust nothing
else. It records the schema version (the columns readers rely on), the instances version (the
rules that made the rows from the documents; readers need not check it), task, resolved
config, tokenizer and its hash, every
shard with rows/tokens/bytes/sha256, totals per split, the document accounting
(``documents_read == documents_written + sum(documents_dropped)``) and statistics.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlm_data import storage
from mlm_data.dataset.schema import TASKS, check_schema_version
from mlm_data.dataset.shards import IPC_FORMATS
from mlm_data.errors import DatasetError
from mlm_data.storage.lease import LEASE_NAME

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_NAME = "mlm-data"


@dataclass(frozen=True)
class ShardEntry:
    path: str
    split: str
    num_rows: int
    num_tokens: int
    num_bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "split": self.split, "num_rows": self.num_rows,
                "num_tokens": self.num_tokens, "num_bytes": self.num_bytes, "sha256": self.sha256}


def check_relative_path(path: object, *, source: str) -> str:
    """Accept only a relative path that stays inside the dataset."""
    if not isinstance(path, str) or not path:
        raise DatasetError(f"{source}: shard path {path!r} is not a non-empty string")
    norm = posixpath.normpath(path)
    if path.startswith("/") or "://" in path or "\\" in path or norm.startswith("..") or norm != path:
        raise DatasetError(f"{source}: shard path {path!r} must be relative and stay inside the dataset")
    return path


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, tied to the dataset root it was read from."""

    root: str
    data: Mapping[str, Any]
    shards: tuple[ShardEntry, ...]

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def schema_version(self) -> int:
        return int(self.data["schema_version"])

    @property
    def tokenizer(self) -> Mapping[str, Any]:
        return self.data["tokenizer"]

    @property
    def special_tokens(self) -> Mapping[str, int | None]:
        return self.data["tokenizer"]["special_tokens"]

    @property
    def vocab_size(self) -> int:
        return int(self.data["tokenizer"]["vocab_size"])

    @property
    def max_seq_length(self) -> int:
        return int(self.data["max_seq_length"])

    @property
    def ipc_format(self) -> str:
        """How the shards are framed (``stream`` or ``file``); manifests from before the
        choice existed are ``stream``."""
        return str(self.data.get("ipc_format", "stream"))

    @property
    def static_masking(self) -> bool:
        return bool(self.data.get("static_masking", False))

    @property
    def labels(self) -> list[str] | None:
        labels = self.data.get("labels")
        return list(labels) if labels is not None else None

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards})

    def shards_for(self, split: str) -> tuple[ShardEntry, ...]:
        return tuple(s for s in self.shards if s.split == split)

    def url(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def tokenizer_url(self) -> str:
        return self.url(self.data["tokenizer"]["path"])

    @classmethod
    def load(cls, root: str) -> Manifest:
        url = storage.join(root, MANIFEST_NAME)
        try:
            raw = storage.read_bytes(url)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if not storage.exists(root):
                raise DatasetError(f"{root}: does not exist; check the path (a dataset is the --output "
                                   "directory of `mlm-data preprocess`)") from None
            raise DatasetError(
                f"{root}: not a dataset (no {MANIFEST_NAME}); a directory without a manifest is incomplete "
                "or was never written by `mlm-data preprocess` — re-run preprocessing"
            ) from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DatasetError(f"{url}: manifest is not valid JSON ({e}); re-create the dataset") from None
        return cls.from_dict(root, data, source=url)

    @classmethod
    def from_dict(cls, root: str, data: Any, *, source: str) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{source}: not an {FORMAT_NAME} manifest")
        check_schema_version(data.get("schema_version"), source=source)
        missing = [k for k in ("task", "tokenizer", "shards", "counts", "max_seq_length") if k not in data]
        if missing:
            raise DatasetError(f"{source}: manifest lacks {', '.join(missing)}; re-create the dataset")
        if data["task"] not in TASKS:
            raise DatasetError(f"{source}: unknown task {data['task']!r}; this mlm-data knows {', '.join(TASKS)}")
        if data.get("ipc_format", "stream") not in IPC_FORMATS:
            raise DatasetError(f"{source}: unknown shard ipc_format {data['ipc_format']!r}; this mlm-data reads "
                               f"{' and '.join(IPC_FORMATS)}")
        shards = []
        for i, s in enumerate(data["shards"]):
            try:
                shards.append(ShardEntry(
                    path=check_relative_path(s["path"], source=source),
                    split=str(s["split"]),
                    num_rows=int(s["num_rows"]),
                    num_tokens=int(s["num_tokens"]),
                    num_bytes=int(s["num_bytes"]),
                    sha256=str(s["sha256"]),
                ))
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{source}: shard entry {i} is malformed ({e})") from None
        check_relative_path(data["tokenizer"].get("path"), source=source)
        return cls(root=root, data=data, shards=tuple(shards))


def write_manifest(root: str, data: Mapping[str, Any]) -> None:
    """Publish the manifest in one step (the dataset becomes visible to readers only now)."""
    storage.write_bytes(storage.join(root, MANIFEST_NAME), manifest_bytes(data))


def manifest_bytes(data: Mapping[str, Any]) -> bytes:
    """``manifest.json`` as written: what its sha256 is taken of."""
    return (to_json(data) + "\n").encode("utf-8")


def to_json(value: Any, indent: str = "") -> str:
    """JSON indented by two spaces per level, except that a list of plain values stays on one
    line: a histogram's 130 counts read as one row, not 130 lines.

    >>> print(to_json({"a": [1, 2], "b": {"c": "x"}}))
    {
      "a": [1, 2],
      "b": {
        "c": "x"
      }
    }
    """
    inner = indent + "  "
    if isinstance(value, Mapping) and value:
        items = (f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {to_json(v, inner)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def summarize_stats(split_stats: Mapping[str, Any], *, max_seq_length: int) -> dict[str, Any]:
    """Add the derived figures people look for first: NSP balance, truncation and padding."""
    out = dict(split_stats)
    rows, tokens = int(out.get("rows", 0)), int(out.get("tokens", 0))
    if rows:
        out["mean_sequence_length"] = round(tokens / rows, 3)
        out["padding_fraction_at_max_length"] = round(1.0 - tokens / (rows * max_seq_length), 6)
    nsp = out.get("nsp")
    if nsp:
        total = nsp["is_next"] + nsp["random_next"]
        out["nsp_random_fraction"] = round(nsp["random_next"] / total, 6) if total else 0.0
    if "truncated_rows" in out and rows:
        out["truncation_rate"] = round(out["truncated_rows"] / rows, 6)
    if "masked_tokens" in out and tokens:
        out["masked_fraction"] = round(out["masked_tokens"] / tokens, 6)
    return out


def build_manifest_data(
    *,
    task: str,
    schema_version: int,
    instances_version: int,
    id_dtype: str,
    ipc_format: str = "stream",
    max_seq_length: int,
    static_masking: bool,
    tokenizer: Mapping[str, Any],
    config: Mapping[str, Any],
    shards: list[ShardEntry],
    counts: Mapping[str, Any],
    files: Mapping[str, Any],
    stats: Mapping[str, Mapping[str, Any]],
    labels: list[str] | None = None,
    created_by: str,
) -> dict[str, Any]:
    shards = sorted(shards, key=lambda s: s.path)
    splits: dict[str, dict[str, int]] = {}
    for s in shards:
        t = splits.setdefault(s.split, {"num_shards": 0, "num_rows": 0, "num_tokens": 0, "num_bytes": 0})
        t["num_shards"] += 1
        t["num_rows"] += s.num_rows
        t["num_tokens"] += s.num_tokens
        t["num_bytes"] += s.num_bytes
    totals = {k: sum(t[k] for t in splits.values()) for k in ("num_shards", "num_rows", "num_tokens", "num_bytes")}
    return {
        "format": FORMAT_NAME,
        "schema_version": schema_version,
        "instances_version": instances_version,
        "task": task,
        "created_by": created_by,
        "id_dtype": id_dtype,
        "ipc_format": ipc_format,
        "max_seq_length": max_seq_length,
        "static_masking": static_masking,
        "tokenizer": dict(tokenizer),
        "labels": labels,
        "totals": totals,
        "splits": {k: splits[k] for k in sorted(splits)},
        "counts": {**counts, "files": dict(files)},
        "stats": {k: summarize_stats(v, max_seq_length=max_seq_length) for k, v in sorted(stats.items())},
        "config": dict(config),
        "shards": [s.as_dict() for s in shards],
    }


def remove_stale_files(root: str, manifest: Mapping[str, Any] | None) -> list[str]:
    """Delete shards, tokenizers and temporaries under ``root`` that ``manifest`` does not list
    (all of them if there is no manifest).

    An earlier dataset replaced by this one, or a failed run, leaves such files; they are never
    read (readers trust the manifest) but they waste space and confuse people. Only names this
    project writes are touched; the writer lease is not one of them.
    """
    listed = {s["path"] for s in manifest["shards"]} if manifest else set()
    if manifest:
        listed.add(manifest["tokenizer"]["path"])
    removed = []
    for rel in storage.list_files(root):
        base = posixpath.basename(rel)
        tokenizer = rel == base and base.startswith("tokenizer") and base.endswith(".json")
        ours = (base.startswith("shard-") and base.endswith(".arrow")) or base.startswith(".tmp-") or tokenizer
        if ours and rel not in listed and not base.endswith(LEASE_NAME):
            storage.remove(storage.join(root, rel))
            removed.append(rel)
    return removed
