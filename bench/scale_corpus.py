"""Build the scale-benchmark corpora: re-sampled documentation text, and unseen documentation.

Run:  python bench/scale_corpus.py [--out /tmp/mlm-scale] [--sizes 100 300 1024] [--unseen]

Re-sampled (``resampled-<MB>mb/``): the paragraphs of the shared Python and Django
documentation (one paragraph per line, ~63,000 of them, ~10 MB; the bundled 2 MB demo corpus
in a checkout without the shared folder, e.g. for the test), drawn into new documents of
5-40 paragraphs each by a seeded generator until the corpus holds the requested megabytes
(10^6 bytes of UTF-8 text). Every document is distinct, so exact de-duplication keeps them all:
at 1 GB a clash of two random paragraph sequences is astronomically unlikely, and the builder
also checks each document's digest and draws again on a clash, so it is guaranteed. The same
documents are written three times, as ``txt/`` (a blank line between documents),
``jsonl/*.jsonl.gz`` (``{"text": ...}``) and ``parquet/`` (a ``text`` column), split into files
of ~32 MB of text, and at least 8 files, so parallel runners have work to share. A corpus is rebuilt only when its ``corpus.json`` (written last) is missing
or was made with other parameters.

Unseen (``unseen-docs/``, with ``--unseen``): documentation no re-sampling has seen, as it is,
so word frequencies are those of real pages rather than of a re-sampled 10 MB: the HTML
manuals of Debian doc packages (PostgreSQL, SymPy, Astropy, GIMP), installed with apt-get when
missing and converted to text (``bench/html_text.py``). Where apt-get cannot install them the
corpus falls back to the shared documentation pages themselves, not re-sampled (~10 MB), and
``corpus.json`` says which it is.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [p for p in (str(REPO), str(REPO / "bench")) if p not in sys.path]

from shared import SHARED  # noqa: E402

from mlm_data.text.cleaning import clean_text  # noqa: E402

SOURCES = ("corpora/pydoc/python-3.11-docs.txt", "corpora/django/django-docs.txt")
DEMO = REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz"
FORMATS = ("txt", "jsonl", "parquet")
FILE_MB = 32
MIN_FILES = 8
MIN_PARAGRAPHS, MAX_PARAGRAPHS = 5, 40
VERSION = 2
"""Bumped whenever the same parameters would give different documents."""


def source_documents() -> tuple[list[str], str]:
    """Documentation pages, cleaned as the pipeline cleans them, and where they came from.

    The shared Python and Django documentation; without it (a bare checkout) the bundled demo
    corpus, a 2 MB slice of the former, so the benchmark still runs, on less varied text.
    """
    paths = [SHARED / rel for rel in SOURCES]
    if not all(p.exists() for p in paths):
        paths = [DEMO]
    docs: list[str] = []
    for path in paths:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text("utf-8")
        docs += [c for d in text.split("\n\n") if (c := clean_text(d))]
    return docs, ", ".join(p.name for p in paths)


def resampled_documents(paragraphs: list[str], target_bytes: int, seed: int) -> Iterator[str]:
    """Distinct documents of 5-40 random paragraphs until ``target_bytes`` of text.

    Paragraphs are clean lines, so a document is its own cleaned form and the digest checked
    here is the one the pipeline de-duplicates by.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    seen: set[bytes] = set()
    size = 0
    while size < target_bytes:
        n = int(rng.integers(MIN_PARAGRAPHS, MAX_PARAGRAPHS + 1))
        text = "\n".join([paragraphs[i] for i in rng.integers(0, len(paragraphs), n).tolist()])
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            continue
        seen.add(digest)
        size += len(text.encode("utf-8")) + 2
        yield text


class Writers:
    """The same documents into every format, each cut into files of ~``file_bytes`` of text."""

    def __init__(self, root: Path, formats: tuple[str, ...], total_bytes: int) -> None:
        self.root, self.formats = root, formats
        self.file_bytes = min(FILE_MB * 1_000_000, total_bytes // MIN_FILES)
        self.part, self.part_bytes, self.documents, self.bytes = 0, 0, 0, 0
        self.pending: list[str] = []
        for fmt in formats:
            (root / fmt).mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> None:
        self.pending.append(text)
        n = len(text.encode("utf-8")) + 2
        self.part_bytes += n
        self.bytes += n
        self.documents += 1
        if self.part_bytes >= self.file_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"part-{self.part:05d}"
        if "txt" in self.formats:
            (self.root / "txt" / f"{name}.txt").write_text("\n\n".join(self.pending) + "\n", encoding="utf-8")
        if "jsonl" in self.formats:
            # mtime=0: the same corpus is the same bytes whenever it is built.
            with gzip.GzipFile(self.root / "jsonl" / f"{name}.jsonl.gz", "wb", mtime=0) as f:
                f.write("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in self.pending).encode())
        if "parquet" in self.formats:
            pq.write_table(pa.table({"text": self.pending}), self.root / "parquet" / f"{name}.parquet",
                           row_group_size=4096)
        self.part += 1
        self.part_bytes = 0
        self.pending = []


def _up_to_date(root: Path, params: dict) -> bool:
    stamp = root / "corpus.json"
    if not stamp.exists():
        return False
    return {k: v for k, v in json.loads(stamp.read_text()).items() if k in params} == params


def _publish(root: Path, writers: Writers, params: dict, **facts: object) -> dict:
    writers.flush()
    stamp = {**params, **facts, "documents": writers.documents, "text_bytes": writers.bytes, "files": writers.part}
    (root / "corpus.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def build_resampled(out: Path, size_mb: float, *, seed: int = 0, formats: tuple[str, ...] = FORMATS) -> Path:
    """The re-sampled corpus of ``size_mb`` megabytes under ``out``; built only if missing."""
    root = out / f"resampled-{size_mb:g}mb"
    docs, source = source_documents()
    paragraphs = [p for d in docs for p in d.split("\n")]
    params = {"kind": "resampled", "version": VERSION, "size_mb": size_mb, "seed": seed, "formats": list(formats),
              "source": f"{len(paragraphs):,} paragraphs of {source}"}
    if _up_to_date(root, params):
        return root
    shutil.rmtree(root, ignore_errors=True)
    writers = Writers(root, formats, int(size_mb * 1_000_000))
    for text in resampled_documents(paragraphs, int(size_mb * 1_000_000), seed):
        writers.add(text)
    stamp = _publish(root, writers, params)
    print(f"built {root}: {stamp['documents']:,} documents, {stamp['text_bytes'] / 1e6:.0f} MB", file=sys.stderr)
    return root


def build_unseen(out: Path, *, formats: tuple[str, ...] = ("txt",)) -> Path:
    """Documentation pages never re-sampled: Debian doc packages, or the shared pages."""
    from html_text import debian_documentation

    root = out / "unseen-docs"
    params = {"kind": "unseen", "version": VERSION, "formats": list(formats)}
    if _up_to_date(root, params):
        return root
    shutil.rmtree(root, ignore_errors=True)
    pages, source = debian_documentation()
    if not pages:
        pages, source = source_documents()
        source = f"{source}, not re-sampled (Debian doc packages unavailable)"
    unique = list(dict.fromkeys(c for text in pages if (c := clean_text(text))))
    writers = Writers(root, formats, sum(len(t.encode("utf-8")) + 2 for t in unique))
    for text in unique:
        writers.add(text)
    stamp = _publish(root, writers, params, source=source)
    print(f"built {root}: {stamp['documents']:,} documents, {stamp['text_bytes'] / 1e6:.0f} MB from {source}",
          file=sys.stderr)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mlm-scale"))
    parser.add_argument("--sizes", type=float, nargs="*", default=[100, 300, 1024], help="megabytes of text")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unseen", action="store_true", help="also build the unseen documentation corpus")
    args = parser.parse_args(argv)
    for size in args.sizes:
        print(build_resampled(args.out, size, seed=args.seed, formats=tuple(args.formats)))
    if args.unseen:
        print(build_unseen(args.out))


if __name__ == "__main__":
    main()
