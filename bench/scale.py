"""The scale benchmark behind ``make bench-scale``: corpora built if missing, then one table.

Run:  python bench/scale.py [--out /tmp/mlm-scale] [--sizes 100 300 1024] [--repeats 3]
                            [--runner-mb MB] [--dask-mb MB] [--skip-unseen] [--skip-runners]

For every re-sampled corpus size (``bench/scale_corpus.py``) and the unseen documentation
corpus: ``--repeats`` pairs of a raw pass (``Tokenizer.encode_batch``, 2 threads, every
paragraph) and a pipeline pass (``mlm-data preprocess``, BERT pairs, default config and
runner), alternating, each in a fresh process started by this one. Reported: the pipeline's
median seconds, tokens/s (counted by the raw tokenizer, so ratios are wall-time ratios), the
median of the pairs' raw/pipeline ratios (a drift in the machine's speed hits both halves of
a pair alike), peak RSS of the pipeline's whole process tree, and the sha256 of the dataset.

Then, at ``--runner-mb``: the same corpus in-process, on the multi-processing DirectRunner
with 2 workers, as ``.jsonl.gz`` and as Parquet; and on Beam's DaskRunner over a 2-worker
``LocalCluster`` at ``--dask-mb`` (Dask is far slower; see docs/scaling.md). Runner rows say
whether the dataset is byte-identical to the in-process one of the same corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from scale_corpus import build_resampled, build_unseen  # noqa: E402
from scale_runs import TreePeak  # noqa: E402
from shared import default_tokenizer  # noqa: E402


@dataclass
class Row:
    label: str
    text_mb: float
    seconds: float
    tokens_per_s: float
    ratio: float | None
    peak_rss_mb: float
    sha256: str
    identical: bool | None = None
    notes: list[str] = field(default_factory=list)


def _child(args: list[str]) -> tuple[dict, int]:
    """Run one pass of ``scale_runs.py`` in a fresh process: its JSON result and tree peak (KiB)."""
    proc = subprocess.Popen([sys.executable, str(HERE / "scale_runs.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = TreePeak(proc.pid)
    out, err = proc.communicate()
    peak = probe.stop()
    if proc.returncode:
        raise SystemExit(f"bench pass {args[:2]} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak


def dataset_sha256(root: Path) -> str:
    """One hash over every file of a dataset, by relative path."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _text_mb(corpus: Path) -> float:
    return json.loads((corpus / "corpus.json").read_text())["text_bytes"] / 1e6


def measure_pairs(label: str, corpus: Path, out: Path, tokenizer: Path, repeats: int) -> tuple[Row, int]:
    """Alternating raw and pipeline passes on the corpus's ``txt/`` files; also its raw token count."""
    raw_s, pipe_s, ratios, peaks, raw_cpu, pipe_cpu = [], [], [], [], [], []
    tokens, sha = 0, ""
    for _ in range(repeats):
        raw, _ = _child(["raw", str(corpus / "txt"), str(tokenizer)])
        pipe, tree_kib = _child(["pipeline", str(corpus / "txt"), str(out), str(tokenizer)])
        tokens = raw["tokens"]
        raw_s.append(raw["seconds"])
        pipe_s.append(pipe["seconds"])
        ratios.append(raw["seconds"] / pipe["seconds"])
        peaks.append(max(tree_kib, pipe["own_peak_kib"]))
        raw_cpu.append(raw["cpu_seconds"])
        pipe_cpu.append(pipe["cpu_seconds"])
        sha = dataset_sha256(out)
    seconds = statistics.median(pipe_s)
    row = Row(label, _text_mb(corpus), seconds, tokens / seconds, statistics.median(ratios), max(peaks) / 1024, sha,
              notes=[f"raw: {statistics.median(raw_s):.1f}s = {tokens / statistics.median(raw_s):,.0f} tokens/s; "
                     f"CPU seconds: raw {statistics.median(raw_cpu):.1f}, pipeline {statistics.median(pipe_cpu):.1f}"])
    return row, tokens


def measure_once(label: str, corpus_dir: Path, out: Path, tokenizer: Path, tokens: int, reference: str,
                 extra: list[str]) -> Row:
    pipe, tree_kib = _child(["pipeline", str(corpus_dir), str(out), str(tokenizer), *extra])
    sha = dataset_sha256(out)
    return Row(label, _text_mb(corpus_dir.parent), pipe["seconds"], tokens / pipe["seconds"], None,
               max(tree_kib, pipe["own_peak_kib"]) / 1024, sha, identical=(sha == reference) if reference else None)


def construction_row(n_files: int, work: Path, tokenizer: Path) -> Row:
    """Seconds from ``run`` to a built graph (listing, planning, construction) for tiny files."""
    res, _ = _child(["construction", str(n_files), str(work / "construction"), str(tokenizer)])
    return Row(f"pipeline construction, {n_files:,} input files", 0.0, res["seconds"], 0.0, None, 0.0, "",
               notes=[f"{res['transforms']} transforms, {res['graph_bytes']:,} bytes of graph"])


def print_table(rows: list[Row]) -> None:
    print(f"\n{'corpus / run':<44}{'text MB':>8}{'seconds':>9}{'tokens/s':>12}{'vs raw':>8}"
          f"{'peak RSS MB':>13}  {'dataset sha256':<14}")
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        same = {True: " (same bytes)", False: " (DIFFERENT)", None: ""}[r.identical]
        mb = f"{r.text_mb:.0f}" if r.text_mb >= 1 else (f"{r.text_mb:.1f}" if r.text_mb else "")
        tps = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else ""
        rss = f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb else ""
        print(f"{r.label:<44}{mb:>8}{r.seconds:>9.1f}{tps:>12}{ratio:>8}{rss:>13}  {r.sha256[:12]}{same}")
        for note in r.notes:
            print(f"{'':<6}{note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mlm-scale"))
    parser.add_argument("--sizes", type=float, nargs="+", default=[100, 300, 1024], help="MB of text each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner-mb", type=float, help="corpus size for the runner and format rows "
                        "(default: the smallest of --sizes)")
    parser.add_argument("--dask-mb", type=float, default=20.0, help="corpus size for the Dask row")
    parser.add_argument("--skip-unseen", action="store_true")
    parser.add_argument("--skip-runners", action="store_true")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer or default_tokenizer()
    started = time.perf_counter()
    rows: list[Row] = []
    refs: dict[float, tuple[str, int]] = {}
    work = args.out / "datasets"
    for size in sorted(args.sizes):
        corpus = build_resampled(args.out, size)
        row, tokens = measure_pairs(f"re-sampled docs {size:g} MB", corpus, work / f"resampled-{size:g}", tokenizer,
                                    args.repeats)
        rows.append(row)
        refs[size] = (row.sha256, tokens)
    if not args.skip_unseen:
        corpus = build_unseen(args.out)
        row, _ = measure_pairs("unseen documentation", corpus, work / "unseen", tokenizer, args.repeats)
        row.notes.append(json.loads((corpus / "corpus.json").read_text())["source"])
        rows.append(row)
    if not args.skip_runners:
        runner_mb = args.runner_mb or min(args.sizes)
        for size in sorted({runner_mb, args.dask_mb}):
            if size not in refs:
                corpus = build_resampled(args.out, size)
                row, tokens = measure_pairs(f"re-sampled docs {size:g} MB", corpus, work / f"resampled-{size:g}",
                                            tokenizer, 1)
                refs[size] = (row.sha256, tokens)
        corpus = build_resampled(args.out, runner_mb)
        ref, tokens = refs[runner_mb]
        runs = [("multi_processing x2, txt", "txt", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
                ("in-process, jsonl.gz", "jsonl", []), ("in-process, Parquet", "parquet", [])]
        for label, fmt, extra in runs:
            row = measure_once(f"{runner_mb:g} MB {label}", corpus / fmt, work / "runner", tokenizer, tokens,
                               ref if fmt == "txt" else "", extra)
            rows.append(row)
        dask_ref, dask_tokens = refs[args.dask_mb]
        rows.append(measure_once(f"{args.dask_mb:g} MB Dask LocalCluster x2, txt",
                                 build_resampled(args.out, args.dask_mb) / "txt", work / "runner", tokenizer,
                                 dask_tokens, dask_ref, ["--dask-workers", "2"]))
        rows += [construction_row(n, work, tokenizer) for n in (2, 2000)]
    shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f}s; ratio = median of {args.repeats} alternating "
          "raw/pipeline pairs (targets: >= 1.2x re-sampled at 300 MB and >= 1 GB, >= 1.0x unseen)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
