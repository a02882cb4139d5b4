"""The scale benchmark at a tiny size, so its corpus builder and table never rot.

The real measurement (``make bench-scale``: 100 MB to 1 GB, about an hour) is not a test; this
runs the same script end to end on a third of a megabyte.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import pyarrow.parquet as pq

from conftest import REPO

BENCH = REPO / "bench"


def _build(out, size_mb):
    subprocess.run([sys.executable, str(BENCH / "scale_corpus.py"), "--out", str(out), "--sizes", str(size_mb)],
                   check=True, cwd=REPO, capture_output=True)
    return out / f"resampled-{size_mb:g}mb"


def test_corpus_is_deterministic_distinct_and_the_same_in_every_format(tmp_path):
    first, second = _build(tmp_path / "a", 0.3), _build(tmp_path / "b", 0.3)
    n_files = len(list((first / "txt").iterdir()))
    assert n_files >= 6  # small files, so parallel runners have work to share
    for fmt, ext in (("txt", ".txt"), ("jsonl", ".jsonl.gz"), ("parquet", ".parquet")):
        assert sorted(p.name for p in (first / fmt).iterdir()) == [f"part-{i:05d}{ext}" for i in range(n_files)]
        assert [p.read_bytes() for p in sorted((first / fmt).iterdir())] == \
            [p.read_bytes() for p in sorted((second / fmt).iterdir())]
    docs = [d for p in sorted((first / "txt").iterdir()) for d in p.read_text().rstrip("\n").split("\n\n")]
    assert len({hashlib.blake2b(d.encode()).digest() for d in docs}) == len(docs)
    assert all(5 <= d.count("\n") + 1 <= 40 for d in docs)
    jsonl = []
    for p in sorted((first / "jsonl").iterdir()):
        with gzip.open(p, "rt") as f:
            jsonl += [json.loads(line)["text"] for line in f]
    assert jsonl == docs
    assert [t for p in sorted((first / "parquet").iterdir()) for t in pq.read_table(p).column("text").to_pylist()] == docs
    stamp = json.loads((first / "corpus.json").read_text())
    assert stamp["documents"] == len(docs) and stamp["text_bytes"] >= 300_000


def test_bench_script_prints_its_table(tmp_path):
    res = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--out", str(tmp_path), "--sizes", "0.3",
                          "--repeats", "1", "--dask-mb", "0.2", "--skip-unseen", "--json", str(tmp_path / "rows.json")],
                         check=True, cwd=REPO, capture_output=True, text=True)
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["label"] for r in rows] == [
        "re-sampled docs 0.3 MB", "0.3 MB multi_processing x2, txt", "0.3 MB in-process, jsonl.gz",
        "0.3 MB in-process, Parquet", "0.2 MB Dask LocalCluster x2, txt",
        "pipeline construction, 2 input files", "pipeline construction, 2,000 input files"]
    assert rows[0]["ratio"] > 0 and rows[0]["peak_rss_mb"] > 50
    assert rows[1]["identical"] is True and rows[4]["identical"] is True
    assert "tokens/s" in res.stdout and "(same bytes)" in res.stdout
    assert not (tmp_path / "datasets").exists()
