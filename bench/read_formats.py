"""CPU time of the input readers, per format: what reading costs before cleaning starts.

Run:  .venv/bin/python bench/read_formats.py [--corpus-mb 20] [--repeat 5] [--shared DIR]

Builds one corpus (the shared Python and Django documentation, repeated up to ``--corpus-mb``
of text) in six forms: plain text (pages as documents, and each line a document), gzipped
text, and one record per paragraph as JSONL, gzipped JSONL and Parquet; then reads each with
``read_documents`` (every document slot, as the pipeline's first stage does) and
prints the median process CPU time per form and MB/s of text. CPU time, not wall time: on a
shared machine the neighbours move wall time far more than they move our own CPU seconds.
Compare two versions of the reader by running this script in both checkouts in one session.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from shared import SHARED  # noqa: E402

CORPORA = ("corpora/pydoc/python-3.11-docs.txt", "corpora/django/django-docs.txt")


def build(root: Path, megabytes: int, shared: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = "\n\n".join((shared / p).read_text(encoding="utf-8") for p in CORPORA)
    while len(text) < megabytes << 20:
        text += "\n\n" + text
    text = text[: megabytes << 20]
    # Records of one paragraph each: many short records, where per-record overhead shows.
    docs = [d for d in text.split("\n") if d.strip()]
    jsonl = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    paths = {name: root / name for name in ("c.txt", "c.txt.gz", "c.jsonl", "c.jsonl.gz", "c.parquet")}
    paths["c.txt"].write_text(text, encoding="utf-8")
    paths["c.txt.gz"].write_bytes(gzip.compress(text.encode(), compresslevel=6, mtime=0))
    paths["c.jsonl"].write_bytes(jsonl)
    paths["c.jsonl.gz"].write_bytes(gzip.compress(jsonl, compresslevel=6, mtime=0))
    pq.write_table(pa.table({"text": docs}), paths["c.parquet"])
    return paths


def cpu_seconds(path: Path, **config: str) -> tuple[float, int]:
    from mlm_data.config.preprocess import InputConfig
    from mlm_data.reading.document_reader import list_input_files, read_documents

    (file,) = list_input_files([str(path)])
    started = time.process_time()
    n = sum(1 for _ in read_documents(file, InputConfig(**config), max_document_chars=4_000_000))
    return time.process_time() - started, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-mb", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared material folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlm-data-read-bench-") as tmp:
        paths = build(Path(tmp), args.corpus_mb, args.shared)
        print(f"{args.corpus_mb} MB of text; median CPU seconds of {args.repeat} reads")
        cases = [(name, path, {}) for name, path in paths.items()]
        cases.insert(1, ("c.txt lines", paths["c.txt"], {"document_boundary": "line"}))
        for name, path, config in cases:
            runs = [cpu_seconds(path, **config) for _ in range(args.repeat)]
            seconds = statistics.median(s for s, _ in runs)
            print(f"{name:12} {seconds:6.3f} s  {args.corpus_mb / seconds:7.1f} MB/s  {runs[0][1]} slots")


if __name__ == "__main__":
    main()
