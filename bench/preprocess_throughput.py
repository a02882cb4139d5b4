"""Preprocessing throughput and memory, measured against the ceilings users compare with.

Run:  .venv/bin/python bench/preprocess_throughput.py [--corpus-mb 20] [--skip-memory] [--skip-hf]

In one run, on the same documents and the same tokenizer, it measures:
  raw      ``Tokenizer.encode_batch`` over the documents, the tokenizer's own threads
           (the ceiling: nothing that tokenizes can beat it)
  hf       the HF ``run_mlm.py`` path: ``datasets.map(tokenize, batched, num_proc=2)`` +
           ``group_texts`` into 128-token blocks (if ``datasets``/``transformers`` are installed)
  pipeline ``mlm-data preprocess`` (BERT pairs, in-process Beam runner), wall time from
           pipeline construction to manifest
and prints tokens/s and the pipeline's ratio to each. Raw and pipeline passes alternate, and
the headline ratio is the median of the pairs' ratios, so a drift in the machine's speed (a
shared machine's neighbours) hits both sides of each pair alike. Tokens/s of every path are computed with
the same token count (the raw tokenizer's) so the ratios are wall-time ratios.

Then it runs the pipeline in fresh subprocesses on the corpus and on 4x the corpus and compares
peak RSS: bounded memory means the 4x run stays within 1.2x of the 1x peak. Both runs use the
same bucket size (``--bucket-shard-mb``), as a real corpus would: memory is bounded by the
bucket, and a bigger corpus gets more buckets, not bigger ones.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from shared import SHARED, default_tokenizer  # noqa: E402

CORPORA = [SHARED / "corpora" / "pydoc" / "python-3.11-docs.txt", SHARED / "corpora" / "django" / "django-docs.txt"]


def load_documents(target_mb: float) -> list[str]:
    """Real documentation pages; past the end of the corpora, copies marked so none is a duplicate."""
    base: list[str] = []
    for path in CORPORA:
        if path.exists():
            base += [d for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    if not base:
        with gzip.open(REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz", "rt", encoding="utf-8") as f:
            base = [d for d in f.read().split("\n\n") if d.strip()]
    docs: list[str] = []
    size, copy = 0, 0
    while size < target_mb * 1e6:
        for d in base:
            text = d if copy == 0 else f"Copy {copy} of this page.\n{d}"
            docs.append(text)
            size += len(text.encode("utf-8"))
            if size >= target_mb * 1e6:
                break
        copy += 1
    return docs


def write_corpus(docs: list[str], root: Path, files: int = 8) -> None:
    root.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // files)
    for i in range(files):
        (root / f"part-{i:03d}.txt").write_text("\n\n".join(docs[i * per:(i + 1) * per]) + "\n", encoding="utf-8")


def raw_encoder(tokenizer_path: Path):
    """A timed pass of plain ``encode_batch`` over the documents: ``(tokens, seconds)``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()

    def once(docs: list[str]) -> tuple[int, float]:
        started = time.perf_counter()
        n_tokens = 0
        for i in range(0, len(docs), 256):
            n_tokens += sum(len(e.ids) for e in tok.encode_batch(docs[i:i + 256], add_special_tokens=False))
        return n_tokens, time.perf_counter() - started

    return once


def hf_seconds(docs: list[str], tokenizer_path: Path, repeats: int) -> float | None:
    try:
        import datasets
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    datasets.disable_progress_bars()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path))
    lines = [line for d in docs for line in d.split("\n") if line.strip()]

    def tokenize(batch):
        return tok(batch["text"], return_special_tokens_mask=True)

    def group_texts(examples, block=128):
        concatenated = {k: sum(examples[k], []) for k in examples}
        total = (len(concatenated["input_ids"]) // block) * block
        return {k: [t[i:i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            ds = datasets.Dataset.from_dict({"text": lines})
            ds = ds.map(tokenize, batched=True, num_proc=2, remove_columns=["text"],
                        cache_file_name=os.path.join(cache, "tok.arrow"))
            ds = ds.map(group_texts, batched=True, num_proc=2, cache_file_name=os.path.join(cache, "grp.arrow"))
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def pipeline_once(corpus: Path, out: Path, tokenizer_path: Path) -> float:
    from mlm_data.config.loading import load
    from mlm_data.config.preprocess import PreprocessConfig
    from pipelines.preprocess import run

    cfg = load(PreprocessConfig, settings={
        "input.paths": [str(corpus)], "output.path": str(out), "tokenizer.path": str(tokenizer_path),
        "output.overwrite": True, "clean.deduplicate": True,
    })
    started = time.perf_counter()
    run(cfg, echo=lambda _m: None)
    return time.perf_counter() - started


def interleaved(docs: list[str], corpus: Path, out: Path, tokenizer_path: Path,
                repeats: int) -> tuple[int, float, float, float]:
    """Raw and pipeline passes in turns: ``(tokens, raw seconds, pipeline seconds, ratio)``.

    On a shared machine the speed of a core drifts over minutes; alternating the two and
    taking the median of each pair's ratio compares them under the same conditions."""
    raw = raw_encoder(tokenizer_path)
    pipeline_once(corpus, out, tokenizer_path)  # warm-up: imports, page cache, Beam's first run
    raw(docs)
    raw_times, pipe_times, ratios, n_tokens = [], [], [], 0
    for _ in range(repeats):
        n_tokens, raw_s = raw(docs)
        pipe_s = pipeline_once(corpus, out, tokenizer_path)
        raw_times.append(raw_s)
        pipe_times.append(pipe_s)
        ratios.append(raw_s / pipe_s)
    return n_tokens, statistics.median(raw_times), statistics.median(pipe_times), statistics.median(ratios)


def peak_rss_mb(corpus: Path, out: Path, tokenizer_path: Path, shard_bytes: int) -> float:
    """Peak RSS of a fresh process running the whole pipeline once."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of this
    # (by then large) process would report at least the parent's size.
    code = (
        "import resource, sys\n"
        "def peak_kib():\n"
        "    try:\n"
        "        with open('/proc/self/status') as f:\n"
        "            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))\n"
        "    except OSError:\n"
        "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "from mlm_data.config.loading import load\n"
        "from mlm_data.config.preprocess import PreprocessConfig\n"
        "from pipelines.preprocess import run\n"
        f"cfg = load(PreprocessConfig, settings={{'input.paths': [{str(corpus)!r}], 'output.path': {str(out)!r},"
        f" 'tokenizer.path': {str(tokenizer_path)!r}, 'output.overwrite': True,"
        f" 'output.target_shard_bytes': {shard_bytes}}})\n"
        "run(cfg, echo=lambda m: None)\n"
        "print(peak_kib())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-mb", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--bucket-shard-mb", type=float, default=4.0,
                        help="target shard size (so bucket size) for the memory runs")
    args = parser.parse_args()
    tokenizer_path = default_tokenizer()
    docs = load_documents(args.corpus_mb)
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-"))
    try:
        corpus = work / "corpus"
        write_corpus(docs, corpus)
        mb = sum(len(d.encode()) for d in docs) / 1e6
        print(f"corpus: {len(docs)} documents, {mb:.1f} MB; tokenizer {tokenizer_path.name}; {os.cpu_count()} CPUs")
        n_tokens, raw_s, pipe_s, ratio = interleaved(docs, corpus, work / "out", tokenizer_path, args.repeats)
        hf_s = None if args.skip_hf else hf_seconds(docs, tokenizer_path, max(1, args.repeats - 1))
        rows = [("raw encode_batch (ceiling)", raw_s), ("HF datasets.map + group_texts", hf_s),
                ("mlm-data pipeline (BERT pairs)", pipe_s)]
        print(f"\n{'path':<34}{'seconds':>9}{'tokens/s':>12}{'pipeline ratio':>16}")
        for name, secs in rows:
            if secs is None:
                continue
            print(f"{name:<34}{secs:>9.2f}{n_tokens / secs:>12,.0f}{secs / pipe_s:>15.2f}x")
        result = {"tokens": n_tokens, "raw_s": raw_s, "pipeline_s": pipe_s, "hf_s": hf_s,
                  "pipeline_vs_raw": ratio, "pipeline_vs_hf": (hf_s / pipe_s) if hf_s else None}
        print(f"\npipeline / raw tokenizer throughput: {ratio:.2f}x, the median of {args.repeats} alternating "
              "pairs (target >= 1.2x)")
        if hf_s:
            print(f"pipeline / HF run_mlm path throughput: {hf_s / pipe_s:.2f}x")
        if not args.skip_memory:
            big = work / "corpus4x"
            write_corpus(load_documents(args.corpus_mb * 4), big, files=32)
            shard_bytes = int(args.bucket_shard_mb * 2**20)
            one = peak_rss_mb(corpus, work / "m1", tokenizer_path, shard_bytes)
            four = peak_rss_mb(big, work / "m4", tokenizer_path, shard_bytes)
            result.update(peak_rss_1x_mb=one, peak_rss_4x_mb=four)
            print(f"peak RSS: {one:.0f} MB for 1x, {four:.0f} MB for 4x the input: {four / one:.2f}x (target <= 1.2x)")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
