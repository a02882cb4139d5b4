"""``mlm-data``: preprocess, inspect, verify and train-tokenizer.

Thin by design: parse flags, build a config, call one function. Every config field has a flag
named after its path (``mlm_data.config.flags``: ``instances.max_seq_length`` →
``--instances.max-seq-length``; the common ones are short: ``--input``, ``--output``,
``--tokenizer``, ``--overwrite``, ``--labels-from``), ``--set section.field=value`` reaches any
field too, and a value given on the command line beats the ``--config`` file. Flags that
Beam's pipeline options define are handed to Beam untouched (``--runner``,
``--direct_num_workers``, ``--project``, ...); any other flag is refused, so a typo never
silently becomes a run with defaults.

Errors a user can fix print as one line, ``mlm-data error: ...``, and exit 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlm_data.config.flags import ArgumentParser, add_field_flags, field_flags, given_fields
from mlm_data.config.loading import parse_setting
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.console import configure_logging, echo, run_command

if TYPE_CHECKING:
    from mlm_data.progress import ProgressSettings

#: One flag per config field, by its full path; the ones every run needs have short names.
FLAGS = field_flags(PreprocessConfig, names={
    "input.paths": "--input", "output.path": "--output", "tokenizer.path": "--tokenizer",
    "output.overwrite": "--overwrite", "labels.from_dataset": "--labels-from",
}, metavars={"input.paths": "PATH_OR_GLOB", "output.path": "DATASET", "tokenizer.path": "JSON",
             "labels.from_dataset": "DATASET"})
_SECTIONS = {"seed": "seed", "input": "input (what to read)", "clean": "clean (normalise and filter)",
             "filters": "filters (quality rules, all off by default)", "dedup": "dedup (near-duplicate removal)",
             "tokenizer": "tokenizer", "instances": "instances (what rows to build)",
             "masking": "masking (static masking in the pipeline)", "labels": "labels (classification tasks)",
             "output": "output (where and how to write)"}
INTERRUPTED = "interrupted; nothing was published: no manifest was written"


def _parser() -> tuple[ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = ArgumentParser(prog="mlm-data", description="Turn raw text into deterministic Arrow training shards.")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser(
        "preprocess", help="run the Beam pipeline (Beam's own flags pass through: --runner, --direct_num_workers, ...)",
        usage="mlm-data preprocess [--config YAML] --input PATH_OR_GLOB... --output DATASET [--tokenizer JSON] "
              "[--overwrite] [--set SECTION.FIELD=VALUE]... [--FIELD VALUE]... [BEAM FLAGS]",
        description="Turn raw text into a dataset. Every config field can be set with its own flag; flags "
                    "that Beam's pipeline options define (--runner, --direct_num_workers, --project, "
                    "--temp_location, ...) are handed to Beam, any other flag is an error.")
    pre.add_argument("--config", help="YAML config (configs/pretrain/bert.yaml, ...); defaults otherwise")
    pre.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override any config field, e.g. --set instances.max_seq_length=512")
    add_field_flags(pre, FLAGS, sections=_SECTIONS)
    _progress_flags(pre)

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
    _progress_flags(tt)
    return p, {"preprocess": pre, "inspect": ins, "verify": ver, "train-tokenizer": tt}


def _progress_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only errors and the result")
    parser.add_argument("--progress-interval", type=float, metavar="SECONDS",
                        help="seconds between progress lines (default: 2 on a terminal, 30 in a log)")


def _progress(args: argparse.Namespace) -> ProgressSettings | None:
    """Progress settings from --quiet / --progress-interval and whether stderr is a terminal."""
    from mlm_data.errors import ConfigError
    from mlm_data.progress import ProgressSettings

    if args.progress_interval is not None and not args.progress_interval > 0:
        raise ConfigError(f"--progress-interval: must be a positive number of seconds, found {args.progress_interval}")
    if args.quiet:
        return None
    terminal = sys.stderr.isatty()
    interval = args.progress_interval if args.progress_interval else (2.0 if terminal else 30.0)
    return ProgressSettings(interval=interval, terminal=terminal)


def _silent(_msg: str) -> None:
    pass


def cmd_preprocess(args: argparse.Namespace, beam_args: list[str]) -> int:
    from mlm_data.config.loading import load
    from mlm_data.dataset.inspection import render, summarize
    from pipelines.preprocess import run
    from pipelines.quiet_run import quiet_run

    cfg = load(PreprocessConfig, args.config,
               settings=[*(parse_setting(item) for item in args.set), *given_fields(args, FLAGS)])
    try:
        with quiet_run():
            manifest = run(cfg, beam_args=beam_args, echo=_silent if args.quiet else echo, progress=_progress(args))
    except KeyboardInterrupt:
        echo(interrupted_message(beam_args))
        return 130
    print(render(summarize(manifest)))
    return 0


def interrupted_message(beam_args: Sequence[str]) -> str:
    """What a Ctrl-C left behind: nothing, on a local runner; a remote runner (Dataflow, ...)
    goes on with a job it was already given, and that job would publish the dataset."""
    from pipelines.runner import describe_runner, pipeline_options, runs_on_this_machine

    options = pipeline_options(beam_args)
    if runs_on_this_machine(options):
        return INTERRUPTED
    return (f"interrupted; no manifest was written yet, but a job {describe_runner(options)} already received keeps "
            "running and will publish the dataset: check for it and cancel it with the runner's own tools")


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
    from mlm_data.config.loading import load
    from mlm_data.reading.document_reader import list_input_files
    from mlm_data.stages.plan import resolve_tokenizer

    settings = [*(parse_setting(item) for item in args.set), ("input.paths", list(args.input)),
                ("tokenizer.path", None)]
    if args.vocab_size:
        settings.append(("tokenizer.vocab_size", args.vocab_size))
    if args.cased:
        settings.append(("tokenizer.lowercase", False))
    cfg = load(PreprocessConfig, args.config, settings=settings)
    text, info = resolve_tokenizer(cfg, list_input_files(cfg.input.paths), echo=_silent if args.quiet else echo,
                                   progress=_progress(args))
    storage.write_bytes(args.output, text.encode("utf-8"))
    print(f"wrote {args.output}: {info.vocab_size} entries, sha256 {info.sha256[:12]}…")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    configure_logging()  # before Beam's PipelineOptions, which configures logging its own way
    if unknown and args.command == "preprocess":
        from pipelines.runner import unknown_to_beam

        try:
            not_beam, beam_flags = unknown_to_beam(unknown)
        except argparse.ArgumentError as e:
            commands["preprocess"].error(str(e))
        commands["preprocess"].reject_unknown(not_beam, commands["preprocess"].flags(), beam_flags)
    else:
        commands[args.command].reject_unknown(unknown)
    run = {"preprocess": lambda: cmd_preprocess(args, unknown), "inspect": lambda: cmd_inspect(args),
           "verify": lambda: cmd_verify(args), "train-tokenizer": lambda: cmd_train_tokenizer(args)}
    return run_command(run[args.command], program="mlm-data")


if __name__ == "__main__":
    sys.exit(main())
