"""Peak memory of `mlm-data preprocess` against corpus size: bounded memory means a flat column.

Run:  .venv/bin/python bench/preprocess_memory.py --input 'C100/*.txt' --input 'C300/*.txt' [--input 'C1000/*.txt']
      [--set output.bucket_memory_mb=256] [-- --direct_running_mode=multi_processing --direct_num_workers=2]

Each input (a glob; build re-sampled corpora with the project's corpus builder in ``bench/``)
is preprocessed once, with the default config unless ``--set`` says otherwise, in a fresh
``mlm-data preprocess`` process. While it runs, every process of its tree (Beam worker
processes included) is polled for ``VmHWM`` (the kernel's peak resident set, which, unlike
``ru_maxrss``, does not carry a parent's peak over fork + exec) and the tree's summed
``VmRSS``. The table gives, per input: its size, wall and CPU seconds, the largest single
process's peak, the tree's sampled peak, and the peak against the first input's.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from shared import default_tokenizer  # noqa: E402


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return out
    for child in children:
        out += _tree(child)
    return out


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure(pattern: str, tokenizer: Path, overrides: list[str], beam_args: list[str]) -> dict[str, float]:
    """Preprocess ``pattern`` once; wall and CPU seconds, peak RSS of the largest process and of the tree (MB)."""
    out = Path(tempfile.mkdtemp(prefix="mlm-bench-memory-"))
    cmd = [sys.executable, "-m", "pipelines.cli", "preprocess", "--input", pattern, "--output", str(out / "ds"),
           "--tokenizer", str(tokenizer), "--quiet", *[a for o in overrides for a in ("--set", o)], *beam_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    tree_peak = 0
    try:
        while proc.poll() is None:
            total = 0
            for pid in _tree(proc.pid):
                try:
                    peaks[pid] = max(peaks.get(pid, 0), _status_kib(pid, "VmHWM:"))
                    total += _status_kib(pid, "VmRSS:")
                except (OSError, StopIteration):
                    continue
            tree_peak = max(tree_peak, total)
            time.sleep(0.2)
        if proc.returncode:
            raise SystemExit(f"preprocess failed on {pattern}:\n{proc.stderr.read() if proc.stderr else ''}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": time.perf_counter() - started,
            "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "largest_mb": max(peaks.values(), default=0) / 1024, "tree_mb": tree_peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", action="append", required=True, metavar="GLOB", help="a corpus (repeat)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config override passed to preprocess (default config otherwise)")
    parser.add_argument("beam_args", nargs="*", help="after --: Beam flags for every run")
    args = parser.parse_args()
    tokenizer = default_tokenizer()
    rows = []
    for pattern in args.input:
        size = sum(os.path.getsize(p) for p in glob.glob(pattern)) / 1e6
        rows.append((pattern, size, measure(pattern, tokenizer, args.set, args.beam_args)))
    # The tree's summed RSS is sampled; a single process's VmHWM is exact. The peak is the larger.
    first = max(rows[0][2]["largest_mb"], rows[0][2]["tree_mb"])
    print(f"{'input':<40}{'MB':>9}{'seconds':>9}{'CPU s':>8}{'largest MB':>12}{'tree MB':>9}{'peak vs first':>15}")
    for pattern, size, r in rows:
        peak = max(r["largest_mb"], r["tree_mb"])
        print(f"{pattern[-40:]:<40}{size:>9,.0f}{r['seconds']:>9.0f}{r['cpu_seconds']:>8.0f}{r['largest_mb']:>12,.0f}"
              f"{r['tree_mb']:>9,.0f}{peak / first:>14.2f}x")


if __name__ == "__main__":
    main()
