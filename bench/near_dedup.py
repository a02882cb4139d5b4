"""Near-duplicate removal: quality against datasketch, time overhead, and what the filters remove.

Run:  python bench/near_dedup.py quality [--originals 600] [--threshold 0.5]
      python bench/near_dedup.py speed [--corpus-mb 100] [--pairs 2] [--paragraphs 5 40]
      python bench/near_dedup.py filters [--config configs/pretrain/quality-filters.yaml]

quality  N distinct documentation pages (pairwise 5-gram Jaccard below 0.3) from ../shared, near
         copies of them with 1, 2, 5 and 10 % of words replaced, inserted or deleted, and
         copies with a boilerplate header and footer, plus distinct pages that all carry the
         same boilerplate. The pipeline runs with ``dedup.near_duplicates``; recall is the
         share of copies removed per edit rate, the false-positive rate the share of distinct
         pages removed. The same documents go through datasketch's MinHash + MinHashLSH (same
         shingles, threshold, num_perm and LSH split; candidates verified the same way,
         union-find, smallest id kept), and the two sets of removed documents are compared;
         datasketch with its own (equal-weight) split is printed too.
speed    The BERT recipe on a corpus of distinct documents re-sampled from the paragraphs of
         ../shared (under /tmp/quality-bench-*), with and without near-dedup, alternating, in
         fresh processes; prints wall and CPU seconds of each and the median ratio.
filters  The given filter config over the Python and Django docs: documents removed per rule
         (the ledger of one pipeline run per corpus), and how many each rule alone would remove.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from shared import BERT_TOKENIZER as BERT  # noqa: E402
from shared import SHARED  # noqa: E402

PYDOC = SHARED / "corpora" / "pydoc" / "python-3.11-docs.txt"
DJANGO = SHARED / "corpora" / "django" / "django-docs.txt"
DEMO = REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz"
SMALL_TOKENIZER = REPO / "tests" / "data" / "wordpiece-2k.json"
RATES = (0.01, 0.02, 0.05, 0.10)
HEADER = "Skip to main content | Home | Products | Docs | Blog | Sign in\nThis page was last updated in March."
FOOTER = ("© 2024 Example Corporation. All rights reserved. Privacy policy | Terms of use | Cookie settings\n"
          "Subscribe to our newsletter for product updates, tips and offers. Follow us on social media.")


def pages(paths: list[Path]) -> list[str]:
    """Blank-line separated documents of the given files (the bundled demo if none exists)."""
    out: list[str] = []
    for path in paths:
        if path.exists():
            out += [d for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    if not out:
        with gzip.open(DEMO, "rt", encoding="utf-8") as f:
            out = [d for d in f.read().split("\n\n") if d.strip()]
    return out


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    from mlm_data.quality.words import words_of

    w = words_of(text)
    return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))} if w else set()


def distinct(docs: list[str], n: int, *, max_jaccard: float = 0.3, min_words: int = 50) -> list[str]:
    """Up to ``n`` documents, in order, no two with 5-gram Jaccard similarity above ``max_jaccard``."""
    chosen: list[tuple[str, set]] = []
    for d in docs:
        if len(d.split()) < min_words:
            continue
        s = shingle_set(d)
        if all(len(s & t) / len(s | t) <= max_jaccard for _, t in chosen):
            chosen.append((d, s))
            if len(chosen) == n:
                break
    return [d for d, _ in chosen]


def near_copy(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with ``rate`` of its words replaced, deleted or followed by an inserted word
    (a third each), line structure kept."""
    lines = [line.split(" ") for line in text.split("\n")]
    positions = [(i, j) for i, line in enumerate(lines) for j in range(len(line))]
    vocabulary = [w for line in lines for w in line] or ["word"]
    for i, j in sorted(rng.sample(positions, max(1, round(rate * len(positions)))), reverse=True):
        op = rng.randrange(3)
        if op == 0:
            lines[i][j] = rng.choice(vocabulary) + "x"
        elif op == 1 and len(lines[i]) > 1:
            del lines[i][j]
        else:
            lines[i].insert(j + 1, rng.choice(vocabulary))
    return "\n".join(" ".join(line) for line in lines)


def quality_corpus(originals: list[str], boilerplate_pages: list[str], *, seed: int = 0,
                   copies_per_rate: int | None = None) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Files of documents and, per document id, its kind: ``original``, ``copy-<rate>``,
    ``boilerplate-copy`` or ``boilerplate-original`` (``boilerplate_pages``, distinct from the
    originals, all given the same header and footer). Originals sort before their copies, so
    a correct run keeps every original and removes every copy."""
    rng = random.Random(seed)
    k = copies_per_rate or max(1, len(originals) // 4)
    b = max(1, len(originals) // 10)
    files: dict[str, list[str]] = {"a-originals.txt": list(originals), "b-copies.txt": [], "c-boilerplate.txt": []}
    kinds = [(f"a-originals.txt#{i}", "original") for i in range(len(originals))]
    for rate in RATES:
        for src in rng.sample(range(len(originals)), min(k, len(originals))):
            kinds.append((f"b-copies.txt#{len(files['b-copies.txt'])}", f"copy-{rate:.2f}"))
            files["b-copies.txt"].append(near_copy(originals[src], rate, rng))
    for src in rng.sample(range(len(originals)), min(b, len(originals))):
        kinds.append((f"b-copies.txt#{len(files['b-copies.txt'])}", "boilerplate-copy"))
        files["b-copies.txt"].append(f"{HEADER}\n{originals[src]}\n{FOOTER}")
    # Distinct pages that all carry the same boilerplate: the boilerplate alone must not join them.
    for d in boilerplate_pages:
        kinds.append((f"c-boilerplate.txt#{len(files['c-boilerplate.txt'])}", "boilerplate-original"))
        files["c-boilerplate.txt"].append(f"{HEADER}\n{d}\n{FOOTER}")
    return files, kinds


def write_files(root: Path, files: dict[str, list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, docs in files.items():
        (root / name).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return root


def score(kinds: list[tuple[str, str]], dropped: set[str]) -> dict[str, object]:
    """Recall per copy kind and the false-positive rate over originals (boilerplate ones too)."""
    by_kind: dict[str, list[bool]] = {}
    for doc_id, kind in kinds:
        by_kind.setdefault(kind, []).append(doc_id in dropped)
    recall = {k: sum(v) / len(v) for k, v in sorted(by_kind.items()) if not k.endswith("original")}
    originals = [x for k, v in by_kind.items() if k.endswith("original") for x in v]
    return {"recall": recall, "false_positive_rate": sum(originals) / len(originals),
            "false_positives": sum(originals), "originals": len(originals)}


def run_pipeline(corpus: Path, out: Path, **fields: object) -> tuple[dict, dict[str, str]]:
    """Manifest counts and ``{dropped id: kept id}`` of one in-process pipeline run."""
    from mlm_data.config.loading import load
    from mlm_data.config.preprocess import PreprocessConfig
    from pipelines.preprocess import run

    clusters = out.parent / f"{out.name}-clusters.jsonl"
    extra = {"input.paths": [str(corpus)], "output.path": str(out), "output.overwrite": True,
             "tokenizer.path": str(SMALL_TOKENIZER), "dedup.near_duplicates": True,
             "dedup.write_clusters": str(clusters), **fields}
    manifest = run(load(PreprocessConfig, settings=extra), echo=lambda _m: None)
    dropped = {}
    for line in clusters.read_text().splitlines():
        rec = json.loads(line)
        dropped[rec["id"]] = rec["kept"]
    return manifest.data["counts"], dropped


def datasketch_reference(files: dict[str, list[str]], *, threshold: float, num_perm: int, ngram: int,
                         params: tuple[int, int] | None) -> set[str]:
    """Dropped ids with datasketch: classic MinHash (``num_perm`` hash functions) over the same
    shingles, MinHashLSH candidates (with ``params`` = (bands, rows), or datasketch's own
    equal-weight split if None) verified by estimated Jaccard, union-find, smallest id kept."""
    from datasketch import MinHash, MinHashLSH

    from mlm_data.quality.words import words_of

    ids, hashes = [], {}
    for name, docs in files.items():
        for i, text in enumerate(docs):
            w = words_of(text)
            if not w:
                continue
            grams = {" ".join(w[j:j + ngram]) for j in range(max(len(w) - ngram + 1, 1))}
            m = MinHash(num_perm=num_perm, seed=1)
            m.update_batch([g.encode("utf-8") for g in grams])
            ids.append(f"{name}#{i}")
            hashes[ids[-1]] = m
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
    for doc_id in ids:
        lsh.insert(doc_id, hashes[doc_id])
    parent = {d: d for d in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for doc_id in ids:
        for other in lsh.query(hashes[doc_id]):
            if other != doc_id and hashes[doc_id].jaccard(hashes[other]) >= threshold:
                a, b = find(doc_id), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {d for d in ids if find(d) != d}


def cmd_quality(args: argparse.Namespace) -> None:
    chosen = distinct(pages([PYDOC, DJANGO]), args.originals + args.originals // 10)
    originals, boilerplate_pages = chosen[:args.originals], chosen[args.originals:]
    files, kinds = quality_corpus(originals, boilerplate_pages, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="quality-bench-"))
    try:
        corpus = write_files(work / "in", files)
        print(f"{len(originals)} distinct originals, {sum(map(len, files.values()))} documents, threshold "
              f"{args.threshold}, ngram {args.ngram}, num_perm {args.num_perm}")
        started = time.perf_counter()
        counts, dropped = run_pipeline(corpus, work / "out", **{"dedup.jaccard_threshold": args.threshold,
                                                                 "dedup.ngram": args.ngram,
                                                                 "dedup.num_perm": args.num_perm})
        ours = score(kinds, set(dropped))
        print(f"mlm-data    ({time.perf_counter() - started:.1f}s): {fmt(ours)}")
        print(f"            ledger: {counts['documents_dropped']}")
        from mlm_data.quality.minhash import lsh_params
        split = lsh_params(args.threshold, args.num_perm)
        print(f"            LSH split {split[0]} bands x {split[1]} rows")
        for label, params in (("same split", split), ("own split", None)):
            started = time.perf_counter()
            ref_dropped = datasketch_reference(files, threshold=args.threshold, num_perm=args.num_perm,
                                               ngram=args.ngram, params=params)
            print(f"datasketch, {label} ({time.perf_counter() - started:.1f}s): {fmt(score(kinds, ref_dropped))}")
            if params is None:
                continue
            both, either = set(dropped) & ref_dropped, set(dropped) | ref_dropped
            total = sum(map(len, files.values()))
            print(f"agreement: {len(both)} removed by both, {len(set(dropped) - ref_dropped)} only by mlm-data, "
                  f"{len(ref_dropped - set(dropped))} only by datasketch; same decision for "
                  f"{1 - (len(either) - len(both)) / total:.2%} of {total} documents")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt(s: dict) -> str:
    recall = ", ".join(f"{k} {v:.3f}" for k, v in s["recall"].items())
    return f"recall {recall}; false positives {s['false_positives']}/{s['originals']} ({s['false_positive_rate']:.2%})"


def resampled_corpus(root: Path, target_mb: float, *, seed: int = 0, paragraphs: tuple[int, int] = (5, 40)) -> Path:
    """Distinct documents of ``paragraphs`` (5-40) paragraphs drawn at random from the shared
    corpora's paragraphs."""
    rng = random.Random(seed)
    pool = [p for d in pages([PYDOC, DJANGO]) for p in d.split("\n") if len(p) > 40]
    root.mkdir(parents=True, exist_ok=True)
    size, part, docs = 0, 0, []
    while size < target_mb * 1e6:
        doc = "\n".join(rng.choice(pool) for _ in range(rng.randint(*paragraphs)))
        docs.append(doc)
        size += len(doc.encode("utf-8")) + 2
        if len(docs) == 2000 or size >= target_mb * 1e6:
            (root / f"part-{part:03d}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
            part, docs = part + 1, []
    return root


def timed_run(corpus: Path, out: Path, tokenizer: Path, near: bool) -> tuple[float, float]:
    """Wall and CPU seconds (the child's user + system) of one ``mlm-data preprocess``."""
    cmd = [sys.executable, "-m", "pipelines.cli", "preprocess", "--config", str(REPO / "configs/pretrain/bert.yaml"),
           "--input", str(corpus), "--output", str(out), "--tokenizer", str(tokenizer), "--overwrite",
           "--set", f"dedup.near_duplicates={'true' if near else 'false'}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cmd_speed(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="quality-bench-"))
    tokenizer = BERT if BERT.exists() else SMALL_TOKENIZER
    try:
        corpus = resampled_corpus(work / "in", args.corpus_mb, paragraphs=tuple(args.paragraphs))
        mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
        docs = sum(p.read_text(encoding="utf-8").count("\n\n") + 1 for p in corpus.iterdir())
        print(f"{mb:.1f} MB of re-sampled documents ({docs:,}, {args.paragraphs[0]}-{args.paragraphs[1]} paragraphs "
              f"each), BERT recipe, tokenizer {tokenizer.name}")
        print(f"{'pair':>4} {'plain wall':>11} {'cpu':>8} {'near-dedup wall':>16} {'cpu':>8} {'wall ratio':>11} {'cpu ratio':>10}")
        walls, cpus = [], []
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {near: timed_run(corpus, work / f"out-{near}", tokenizer, near) for near in order}
            (pw, pc), (nw, nc) = got[False], got[True]
            walls.append(nw / pw)
            cpus.append(nc / pc)
            print(f"{i:>4} {pw:>10.1f}s {pc:>7.1f}s {nw:>15.1f}s {nc:>7.1f}s {nw / pw:>10.2f}x {nc / pc:>9.2f}x")
        print(f"near-dedup / plain: wall {statistics.median(walls):.2f}x, CPU {statistics.median(cpus):.2f}x "
              f"(median of {args.pairs} alternating pairs; target <= 1.50x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_filters(args: argparse.Namespace) -> None:
    from mlm_data.accounting import FILTER_RULES
    from mlm_data.config.loading import load, load_yaml
    from mlm_data.config.preprocess import CleanConfig, PreprocessConfig
    from mlm_data.quality.documents import cleaned_text
    from mlm_data.quality.filters import QualityFilter
    from pipelines.preprocess import run

    cfg_data = load_yaml(args.config)
    work = Path(tempfile.mkdtemp(prefix="quality-bench-"))
    try:
        for path in (PYDOC, DJANGO):
            if not path.exists():
                continue
            manifest = run(load(PreprocessConfig, args.config, settings={
                "input.paths": [str(path)], "output.path": str(work / path.stem), "output.overwrite": True,
                "tokenizer.path": str(SMALL_TOKENIZER)}), echo=lambda _m: None)
            c = manifest.data["counts"]
            print(f"{path.name}: {c['documents_read']} documents read, {c['documents_written']} written")
            for reason, n in c["documents_dropped"].items():
                print(f"  {reason:<46}{n:>6}")
            docs = [t for t in (cleaned_text(d, CleanConfig()) for d in pages([path])) if t is not None]
            alone = []
            for rule in FILTER_RULES:
                value = cfg_data.get("filters", {}).get(rule)
                if value in (None, [], {}):
                    continue
                one = load(PreprocessConfig, settings={f"filters.{rule}": value}).filters
                failed = sum(r is not None for r in QualityFilter(one).evaluate(docs))
                alone.append(f"{rule} {failed}")
            print(f"  each rule alone: {', '.join(alone)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--originals", type=int, default=600)
    q.add_argument("--threshold", type=float, default=0.5)
    q.add_argument("--ngram", type=int, default=5)
    q.add_argument("--num-perm", type=int, default=128)
    q.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("speed")
    s.add_argument("--corpus-mb", type=float, default=100)
    s.add_argument("--pairs", type=int, default=2)
    s.add_argument("--paragraphs", type=int, nargs=2, default=(5, 40), metavar=("MIN", "MAX"),
                   help="paragraphs per document (short documents: 2 2)")
    f = sub.add_parser("filters")
    f.add_argument("--config", default=str(REPO / "configs/pretrain/quality-filters.yaml"))
    args = parser.parse_args(argv)
    {"quality": cmd_quality, "speed": cmd_speed, "filters": cmd_filters}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
