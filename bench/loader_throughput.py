"""Loader throughput: read + mask + collate, against HF ``DataCollatorForLanguageModeling``.

Run:  .venv/bin/python bench/loader_throughput.py [--corpus PATH] [--batch-sizes 32 128]
                                                   [--repeats 7] [--sequences 1024] [--work DIR]
                                                   [--tokenizer PATH] [--clock cpu|wall]

It builds two full-sentence MLM datasets (``mlm_fullsent``: every row is full, 128 and 512
tokens) with the preprocessing pipeline, from the bundled demo corpus unless ``--corpus`` names
another (e.g. ../shared/corpora/pydoc/python-3.11-docs.txt), with the shared bert-base-uncased
tokenizer when it is there (``--tokenizer`` names another). Then, per length and batch size, in
one process and interleaved repeat by repeat so that machine noise hits both alike, it times:

  ours   ``ShardLoader`` (no workers): plan lookup, reading the rows from the memory-mapped
         shards, dynamic 80/10/10 masking (``mlm_data.masking``), padding to a multiple of 8,
         attention masks, tensors. Warmed up for one epoch first, so every shard is cached.
  hf     ``DataCollatorForLanguageModeling(mlm_probability=0.15, pad_to_multiple_of=8)`` with a
         ``PreTrainedTokenizerFast`` built from the dataset's tokenizer.json, fed lists of
         ``input_ids`` of the same rows, already read and converted to Python lists (its
         reading is not timed; ours is).

Both run single-threaded (``torch.set_num_threads(1)``, as in a DataLoader worker) and are
timed by the process's CPU time (``--clock cpu``, the default): on a shared machine wall-clock
time also charges whatever other processes ran meanwhile to whichever side was running. It
prints the median sequences/s over the repeats and the ratio, plus where our time goes: the
share spent in ``mask_tokens`` (the core masking, timed on the same rows, one call per pass as
the loader makes it), and how many rows the loader collates per pass (``fuse_batches`` x batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlm_data.config.loading import load  # noqa: E402
from mlm_data.config.preprocess import MaskingConfig, PreprocessConfig  # noqa: E402
from mlm_data.dataset.manifest import Manifest  # noqa: E402
from mlm_data.dataset.shards import decode_table, fetch_shard  # noqa: E402
from mlm_data.masking import mask_tokens  # noqa: E402
from mlm_data.seeding import keys_for  # noqa: E402
from trainer.loading.loader import DataSource, ShardLoader  # noqa: E402
from trainer.loading.options import LoaderOptions  # noqa: E402

DEMO = REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz"
sys.path.insert(0, str(REPO / "bench"))
from shared import BERT_TOKENIZER  # noqa: E402

#: The shared BERT vocabulary, when the shared material is there.
BERT = BERT_TOKENIZER if BERT_TOKENIZER.exists() else None


def build_dataset(work: Path, corpus: Path, length: int, tokenizer: Path | None) -> Path:
    """A ``mlm_fullsent`` dataset of ``length``-token rows (reused when already built)."""
    from pipelines.preprocess import run

    out = work / f"fullsent-{length}"
    if (out / "manifest.json").exists():
        return out
    extra = {
        "input.paths": [str(corpus)], "output.path": str(out), "output.num_buckets": 4,
        "output.validation_fraction": 0.0, "output.overwrite": True,
        "instances.task": "mlm_fullsent", "instances.max_seq_length": length,
    }
    if tokenizer is not None:
        extra["tokenizer.path"] = str(tokenizer)
    run(load(PreprocessConfig, str(REPO / "configs" / "pretrain" / "demo.yaml"), settings=extra), echo=lambda _m: None)
    return out


def hf_collator(root: Path):
    from tokenizers import Tokenizer
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    manifest = Manifest.load(str(root))
    path = str(root / manifest.tokenizer["path"])
    names = {k: Tokenizer.from_file(path).id_to_token(v) for k, v in manifest.special_tokens.items() if v is not None}
    tok = PreTrainedTokenizerFast(tokenizer_file=path, pad_token=names["pad"], mask_token=names["mask"],
                                  cls_token=names["cls"], sep_token=names["sep"], unk_token=names.get("unk"))
    return DataCollatorForLanguageModeling(tok, mlm_probability=0.15, pad_to_multiple_of=8)


def rows_as_lists(root: Path) -> list[list[int]]:
    m = Manifest.load(str(root))
    out: list[list[int]] = []
    for s in m.shards_for("train"):
        table = decode_table(fetch_shard(m.url(s.path), num_bytes=s.num_bytes, sha256=s.sha256), source=s.path)
        out += table.column("input_ids").to_pylist()
    return out


def measure(root: Path, batch_size: int, *, sequences: int, repeats: int, work: Path,
            clock=time.process_time) -> dict[str, float]:
    n_batches = max(1, sequences // batch_size)
    loader = ShardLoader([DataSource(str(root))], batch_size=batch_size, seed=0,
                         options=LoaderOptions(cache_dir=str(work / "cache")))
    ours = iter(loader)
    for _ in range(loader.steps_per_epoch + 2):  # warm-up: every shard fetched, verified, mapped
        sample = next(ours)
    rows = rows_as_lists(root)
    collator = hf_collator(root)
    features = [[{"input_ids": rows[(i * batch_size + j) % len(rows)]} for j in range(batch_size)]
                for i in range(n_batches)]
    collator(features[0])
    # The masking core alone, on these rows, one call per pass of ``fuse`` batches as ours makes.
    producer = loader._producers[False]
    fuse = loader._spec.fuse
    ids = np.tile(sample["input_ids"].numpy(), (fuse, 1))
    maskable = np.tile(sample["attention_mask"].numpy().astype(bool), (fuse, 1)) & ~producer.collator.is_special[ids]
    keys = keys_for(0, "mask", 0, index=np.arange(len(ids)))
    passes = max(1, n_batches // fuse)

    def mask_pass() -> None:
        mask_tokens(ids, maskable=maskable, word_start=None, keys=keys, config=MaskingConfig(),
                    mask_token_id=producer.collator.mask_id, random_token_ids=producer.collator.random_ids)

    ours_s, hf_s, mask_s = [], [], []
    for _ in range(repeats):
        t = clock()
        for _ in range(n_batches):
            sample = next(ours)
        ours_s.append(clock() - t)
        t = clock()
        for f in features:
            collator(f)
        hf_s.append(clock() - t)
        t = clock()
        for _ in range(passes):
            mask_pass()
        mask_s.append((clock() - t) * n_batches / (passes * fuse))
    total = n_batches * batch_size
    ours_rate, hf_rate = total / statistics.median(ours_s), total / statistics.median(hf_s)
    loader.close()
    return {"ours": ours_rate, "hf": hf_rate, "ratio": ours_rate / hf_rate,
            "mask_share": statistics.median(mask_s) / statistics.median(ours_s), "rows_per_pass": fuse * batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEMO)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--sequences", type=int, default=1024, help="sequences per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="keep datasets here between runs")
    parser.add_argument("--tokenizer", type=Path, default=BERT, help="tokenizer.json (default: the shared BERT "
                        "uncased one when it is there, else the demo config trains one)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="time by process CPU or wall clock")
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"corpus {args.corpus.name}, tokenizer {args.tokenizer.name if args.tokenizer else 'trained 8k'}, "
              f"{args.repeats} repeats of {args.sequences} sequences, median {args.clock} time; one process, one thread")
        print(f"{'length':>6} {'batch':>5} {'ours seq/s':>11} {'HF seq/s':>9} {'ratio':>6} {'mask_tokens':>12} "
              f"{'rows/pass':>9}")
        for length in args.lengths:
            root = build_dataset(work, args.corpus, length, args.tokenizer)
            for batch_size in args.batch_sizes:
                r = measure(root, batch_size, sequences=args.sequences, repeats=args.repeats, work=work, clock=clock)
                print(f"{length:>6} {batch_size:>5} {r['ours']:>11,.0f} {r['hf']:>9,.0f} {r['ratio']:>5.1f}x "
                      f"{r['mask_share']:>11.0%} {r['rows_per_pass']:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
