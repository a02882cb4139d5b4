"""``mlm-data``: preprocess, inspect, verify and train-tokenizer.

Thin by design: parse flags, build a config, call one function. Flags this CLI does not know
are handed to Beam untouched (``--runner``, ``--direct_num_workers``, ``--project``, ...).
Errors a user can fix print as one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mlm_data.console import configure_logging, echo, run_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlm-data", allow_abbrev=False,
                                description="Turn raw text into deterministic Arrow training shards.")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("preprocess", allow_abbrev=False,
                         help="run the Beam pipeline (unknown flags go to Beam: --runner, --direct_num_workers, ...)")
    pre.add_argument("--config", help="YAML config (configs/pretrain/bert.yaml, ...); defaults otherwise")
    pre.add_argument("--input", nargs="+", action="extend", metavar="PATH_OR_GLOB",
                     help="input files, globs or URLs (replaces input.paths)")
    pre.add_argument("--output", help="dataset directory or URL (replaces output.path)")
    pre.add_argument("--tokenizer", help="HF tokenizers JSON, local or URL (replaces tokenizer.path)")
    pre.add_argument("--labels-from", metavar="DATASET",
                     help="reuse the label list of an existing dataset, so dev/test label ids match train")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --output")
    pre.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override any config field, e.g. --set instances.max_seq_length=512")

    ins = sub.add_parser("inspect", help="summarise a dataset: rows, tokens, drops, stats and a decoded sample")
    ins.add_argument("dataset")
    ins.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ins.add_argument("--plot", metavar="DIR", help="also write PNG histograms into DIR")

    ver = sub.add_parser("verify", help="re-hash every shard against the manifest (exit 1 on any mismatch)")
    ver.add_argument("dataset")
    ver.add_argument("--quiet", action="store_true")

    tt = sub.add_parser("train-tokenizer", help="train a WordPiece tokenizer on text files")
    tt.add_argument("--input", nargs="+", action="extend", required=True, metavar="PATH_OR_GLOB")
    tt.add_argument("--output", required=True, help="where to write tokenizer.json")
    tt.add_argument("--config", help="YAML config whose input/clean/tokenizer sections apply")
    tt.add_argument("--vocab-size", type=int)
    tt.add_argument("--cased", action="store_true", help="keep case and accents (default: BERT uncased)")
    tt.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    return p


def cmd_preprocess(args: argparse.Namespace, beam_args: list[str]) -> int:
    from mlm_data.config.preprocess import load_preprocess_config
    from pipelines.preprocess import run

    extra: dict[str, object] = {}
    if args.input:
        extra["input.paths"] = list(args.input)
    if args.output:
        extra["output.path"] = args.output
    if args.tokenizer:
        extra["tokenizer.path"] = args.tokenizer
    if args.overwrite:
        extra["output.overwrite"] = True
    if args.labels_from:
        extra["labels.from_dataset"] = args.labels_from
    cfg = load_preprocess_config(args.config, overrides=args.set, extra=extra)
    manifest = run(cfg, beam_args=beam_args, echo=echo)
    from mlm_data.dataset.inspection import render, summarize

    print(render(summarize(manifest)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from mlm_data.dataset.inspection import render, summarize
    from mlm_data.dataset.manifest import Manifest

    manifest = Manifest.load(args.dataset)
    summary = summarize(manifest)
    if args.plot:
        from mlm_data.dataset.plots import plot_stats

        summary["plots"] = plot_stats(manifest.data.get("stats", {}), args.plot)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(render(summary))
        for path in summary.get("plots", []):
            print(f"wrote {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from mlm_data.dataset.inspection import verify
    from mlm_data.dataset.manifest import Manifest

    manifest = Manifest.load(args.dataset)
    report = verify(manifest, progress=None if args.quiet else echo)
    for problem in report.problems:
        print(f"FAIL {problem}")
    if report.ok:
        print(f"OK {report.checked} shards and the tokenizer match {args.dataset}/manifest.json")
        return 0
    print(f"{len(report.problems)} problem(s) in {report.checked} shards")
    return 1


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from mlm_data import storage
    from mlm_data.config.preprocess import load_preprocess_config
    from mlm_data.reading.document_reader import list_input_files
    from pipelines.preprocess import resolve_tokenizer

    extra: dict[str, object] = {"input.paths": list(args.input), "tokenizer.path": None}
    if args.vocab_size:
        extra["tokenizer.vocab_size"] = args.vocab_size
    if args.cased:
        extra["tokenizer.lowercase"] = False
    cfg = load_preprocess_config(args.config, overrides=args.set, extra=extra)
    text, info = resolve_tokenizer(cfg, list_input_files(cfg.input.paths), echo=echo)
    storage.write_bytes(args.output, text.encode("utf-8"))
    print(f"wrote {args.output}: {info.vocab_size} entries, sha256 {info.sha256[:12]}…")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "preprocess":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    configure_logging()
    commands = {"preprocess": lambda: cmd_preprocess(args, unknown), "inspect": lambda: cmd_inspect(args),
                "verify": lambda: cmd_verify(args), "train-tokenizer": lambda: cmd_train_tokenizer(args)}
    return run_command(commands[args.command])


if __name__ == "__main__":
    sys.exit(main())
