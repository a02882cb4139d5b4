"""What ``mlm-data inspect`` and ``verify`` report, as pure functions over a manifest.

``summarize`` returns one JSON-able dict (the ``--json`` output); ``render`` turns it into the
human summary; ``verify`` re-fetches every shard and checks size, sha256, schema and row count
against the manifest, collecting every problem rather than stopping at the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from mlm_data import storage
from mlm_data.dataset.manifest import Manifest
from mlm_data.dataset.schema import IGNORE_INDEX, MLM_TASKS
from mlm_data.dataset.shards import decode_table, fetch_shard
from mlm_data.dataset.stats import histogram_quantile
from mlm_data.errors import DatasetError


def summarize(manifest: Manifest, *, sample: bool = True) -> dict[str, Any]:
    d = manifest.data
    out: dict[str, Any] = {
        "dataset": manifest.root,
        "task": manifest.task,
        "schema_version": manifest.schema_version,
        "max_seq_length": manifest.max_seq_length,
        "static_masking": manifest.static_masking,
        "tokenizer": {k: d["tokenizer"][k] for k in ("path", "sha256", "vocab_size")},
        "id_dtype": d.get("id_dtype"),
        "totals": d["totals"],
        "splits": d["splits"],
        "counts": d["counts"],
        "stats": {},
    }
    if manifest.labels is not None:
        out["labels"] = manifest.labels
    for split, st in d.get("stats", {}).items():
        head = {k: st[k] for k in ("rows", "tokens", "mean_sequence_length", "padding_fraction_at_max_length",
                                    "nsp_random_fraction", "truncation_rate", "masked_fraction") if k in st}
        if "nsp" in st:
            head["nsp"] = st["nsp"]
        if "sequence_length" in st:
            cap = manifest.max_seq_length
            head["sequence_length_p50"] = round(min(cap, histogram_quantile(st["sequence_length"], 0.5)), 1)
            head["sequence_length_p95"] = round(min(cap, histogram_quantile(st["sequence_length"], 0.95)), 1)
        out["stats"][split] = head
    if sample and manifest.shards:
        out["sample"] = decoded_sample(manifest)
    return out


def decoded_sample(manifest: Manifest, *, row: int = 0) -> dict[str, Any]:
    """The first row of the first shard, decoded, so people see what the model will see."""
    from mlm_data.text.tokenizer import dataset_tokenizer_text, parse_tokenizer

    entry = manifest.shards[0]
    table = decode_table(fetch_shard(manifest.url(entry.path), num_bytes=entry.num_bytes, sha256=entry.sha256),
                         source=manifest.url(entry.path))
    tok = parse_tokenizer(dataset_tokenizer_text(manifest), source=manifest.tokenizer_url())
    rec = table.slice(row, 1).to_pylist()[0]
    ids = list(rec["input_ids"])
    out: dict[str, Any] = {"shard": entry.path, "row": row, "num_tokens": len(ids)}
    if "masked_positions" in rec:
        original = list(ids)
        for p, lab in zip(rec["masked_positions"], rec["masked_labels"]):
            original[p] = lab
        out["text"] = tok.decode(ids, skip_special_tokens=False)
        out["original_text"] = tok.decode(original, skip_special_tokens=False)
    elif "segment_b_start" in rec and rec["segment_b_start"] is not None:
        b = int(rec["segment_b_start"])
        out["segment_a"] = tok.decode(ids[:b], skip_special_tokens=False)
        out["segment_b"] = tok.decode(ids[b:], skip_special_tokens=False)
    else:
        out["text"] = tok.decode(ids, skip_special_tokens=False)
    for key in ("next_sentence_label", "label", "document_starts"):
        if key in rec:
            out[key] = rec[key]
    if "label" in rec and manifest.labels:
        out["label_name"] = manifest.labels[rec["label"]]
    if "labels" in rec and manifest.labels:
        names = manifest.labels
        out["token_labels"] = [
            (tok.id_to_token(i), names[lab]) for i, lab in zip(ids, rec["labels"]) if lab != IGNORE_INDEX
        ][:40]
    return out


def _masking_note(s: dict[str, Any]) -> str:
    if s["task"] not in MLM_TASKS:
        return ""
    return ", static masking" if s["static_masking"] else ", dynamic masking in the loader"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(summary: dict[str, Any]) -> str:
    s = summary
    lines = [
        f"dataset   {s['dataset']}",
        f"task      {s['task']} (schema v{s['schema_version']}, max_seq_length {s['max_seq_length']}"
        f"{_masking_note(s)})",
        f"tokenizer {s['tokenizer']['path']} ({s['tokenizer']['vocab_size']} entries, ids {s['id_dtype']}, "
        f"sha256 {s['tokenizer']['sha256'][:12]}…)",
        "",
        f"{'split':<12}{'shards':>8}{'rows':>12}{'tokens':>14}{'MiB':>10}",
    ]
    for name, t in s["splits"].items():
        lines.append(f"{name:<12}{t['num_shards']:>8}{t['num_rows']:>12,}{t['num_tokens']:>14,}{t['num_bytes'] / 2**20:>10.1f}")
    c = s["counts"]
    lines += ["", f"documents read {c['documents_read']:,}, written {c['documents_written']:,}, dropped "
              f"{sum(c['documents_dropped'].values()):,}"]
    width = max([22, *map(len, c["documents_dropped"])])  # filter.<rule> names run long
    for reason, n in c["documents_dropped"].items():
        lines.append(f"  dropped {reason:<{width}}{n:>10,}")
    for reason, lost in c.get("chunks_dropped", {}).items():
        lines.append(f"chunks dropped {reason} {lost['chunks']:,} ({lost['tokens']:,} tokens)")
    files = c.get("files", {})
    for p in files.get("problems", []):
        lines.append(f"  file {p['file']}: {p['reason']} ({p['detail']})")
    for split, st in s["stats"].items():
        parts = []
        if "mean_sequence_length" in st:
            parts.append(f"mean length {st['mean_sequence_length']:.1f} (p50 {st.get('sequence_length_p50', 0):.0f}, "
                         f"p95 {st.get('sequence_length_p95', 0):.0f})")
        if "padding_fraction_at_max_length" in st:
            parts.append(f"padding at max length {_pct(st['padding_fraction_at_max_length'])}")
        if "nsp_random_fraction" in st:
            parts.append(f"NSP random-next {_pct(st['nsp_random_fraction'])}")
        if "truncation_rate" in st:
            parts.append(f"truncated {_pct(st['truncation_rate'])}")
        if "masked_fraction" in st:
            parts.append(f"masked {_pct(st['masked_fraction'])}")
        lines.append(f"{split}: " + ", ".join(parts))
    if "labels" in s:
        lines.append(f"labels ({len(s['labels'])}): {', '.join(s['labels'][:20])}{' …' if len(s['labels']) > 20 else ''}")
    sample = s.get("sample")
    if sample:
        lines += ["", f"sample ({sample['shard']} row {sample['row']}, {sample['num_tokens']} tokens):"]
        for key in ("segment_a", "segment_b", "text", "original_text", "next_sentence_label", "label", "label_name",
                    "document_starts"):
            if key in sample:
                lines.append(f"  {key}: {sample[key]}")
        if "token_labels" in sample:
            lines.append("  token_labels: " + " ".join(f"{t}/{lab}" for t, lab in sample["token_labels"]))
    return "\n".join(lines)


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(manifest: Manifest, *, progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Re-hash every shard and the tokenizer against the manifest; decode each shard."""
    report = VerifyReport()
    tok_url = manifest.tokenizer_url()
    try:
        digest = hashlib.sha256(storage.read_bytes(tok_url)).hexdigest()
        if digest != manifest.tokenizer["sha256"]:
            report.problems.append(f"{tok_url}: tokenizer checksum mismatch")
    except FileNotFoundError:
        report.problems.append(f"{tok_url}: tokenizer file is missing")
    for entry in manifest.shards:
        url = manifest.url(entry.path)
        try:
            data = fetch_shard(url, num_bytes=entry.num_bytes, sha256=entry.sha256)
            table = decode_table(data, source=url)
            version = (table.schema.metadata or {}).get(b"mlm_data.schema_version")
            if version != str(manifest.schema_version).encode():
                report.problems.append(f"{url}: schema version {version!r} differs from the manifest")
            if table.num_rows != entry.num_rows:
                report.problems.append(f"{url}: {table.num_rows} rows, the manifest says {entry.num_rows}")
            n_tokens = pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0
            if n_tokens != entry.num_tokens:
                report.problems.append(f"{url}: {n_tokens} tokens, the manifest says {entry.num_tokens}")
        except DatasetError as e:
            report.problems.append(str(e).removeprefix("mlm-data error: "))
        report.checked += 1
        if progress:
            progress(f"checked {report.checked}/{len(manifest.shards)} {entry.path}")
    return report
