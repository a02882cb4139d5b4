"""``mlm-train``: pretrain and fine-tune on mlm-data shards, sample, export, plot.

``pretrain`` (MLM encoders, causal decoders, continued pretraining with ``--init``) and
``finetune`` (token or sequence labels) share one config and one set of flags; ``generate``
samples from a causal-LM run, ``export --format hf`` writes an encoder for ``transformers``.

Thin by design: parse flags, build a config, call one function. Every config field has a flag
named after its path below the section (``train.max_steps`` → ``--max-steps``,
``model.hidden_size`` → ``--hidden-size``, ``data.masking.whole_word`` →
``--masking.whole-word``), and ``--set section.field=value`` reaches any field by its full
path. Precedence, lowest first: defaults (for ``finetune``, ``config.FINETUNE_DEFAULTS``), the
resumed run's config.yaml, ``--config``, ``--set``, the field flags, ``--data``/``--eval-data``.

Errors a user can fix print as one line and exit 2; anything else is a bug and keeps its
traceback. Run it under ``torchrun --nproc_per_node N -m trainer.cli pretrain ...`` for DDP.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from mlm_data.console import configure_logging, run_command
from mlm_data.errors import ConfigError
from trainer.config import PretrainConfig

# ---- flags generated from the config fields

#: Fields set by a dedicated flag instead of a generated one (``--data``, ``--eval-data``).
_NO_FIELD_FLAG = frozenset({"data.sources", "data.eval_sources"})


@dataclass(frozen=True)
class FieldFlag:
    flag: str
    """``--hidden-size``: the field path without its section, dashes for underscores."""
    path: str
    """``model.hidden_size``: where the value goes in the config."""
    help: str
    metavar: str
    """What the value looks like: ``INT``, ``FLOAT``, ``{post,pre}``, ..."""
    is_bool: bool


def field_flags(cls: type = PretrainConfig) -> list[FieldFlag]:
    """One flag per leaf field of ``cls``, named by the path below its top-level section.

    ``train.max_steps`` → ``--max-steps``, ``data.masking.whole_word`` → ``--masking.whole-word``,
    ``output`` → ``--output``. The names are checked unique, so adding a field that would
    shadow another fails loudly here instead of silently setting the wrong one.
    """
    flags: list[FieldFlag] = []

    def walk(tp: type, prefix: tuple[str, ...]) -> None:
        docs = {k: v for base in reversed(tp.__mro__) for k, v in _attribute_docs(base).items()}
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            path = (*prefix, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], path)
                continue
            dotted = ".".join(path)
            if dotted in _NO_FIELD_FLAG:
                continue
            name = ".".join(path[1:] if len(path) > 1 else path).replace("_", "-")
            field_type = hints[f.name]
            flags.append(FieldFlag(f"--{name}", dotted, docs.get(f.name, ""), _metavar(field_type),
                                   field_type is bool))

    walk(cls, ())
    seen: dict[str, str] = {}
    for fl in flags:
        if fl.flag in seen:
            raise RuntimeError(f"config fields {seen[fl.flag]} and {fl.path} would share the flag {fl.flag}")
        seen[fl.flag] = fl.path
    return flags


def _metavar(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if tp is bool:
        return "true|false"
    if tp in (int, float, str):
        return {"int": "INT", "float": "FLOAT", "str": "TEXT"}[tp.__name__]
    if typing.get_origin(tp) is tuple:
        return "[" + ",".join(_metavar(a) for a in args) + "]"
    named = [_metavar(a) for a in args if a is not type(None)]
    return (named[0] + "|null") if len(named) == 1 else "VALUE"


def _attribute_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (the convention this project uses)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def parse_setting(item: str, *, source: str = "--set") -> tuple[str, Any]:
    """``"train.lr=5e-4"`` → ``("train.lr", 0.0005)``: the value is read as YAML, except that a
    number in exponent form is a number for a numeric field (YAML 1.1 reads ``5e-4`` as text)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source}: override {item!r} is not of the form section.field=value")
    return key.strip(), parse_value(key.strip(), raw)


def parse_value(path: str, raw: str) -> Any:
    """A command-line value parsed as YAML (numbers, booleans, lists); the config loader then
    checks and converts it against the field's type."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


# ---- the command line

_SECTIONS = {"model": "model (what network to build)", "train": "train (how to optimise it)",
             "data": "data (what to feed it)", "output": "run folder", "init": "warm start"}
_TASK_SPELLINGS = {"token-classification": "token_classification",
                   "sequence-classification": "sequence_classification", "causal-lm": "causal_lm"}


def _training_parser(sub: Any, command: str, *, help: str, usage: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(command, allow_abbrev=False, help=help, usage=usage, description=description)
    p.add_argument("--config", help="YAML config (configs/train/*.yaml); defaults otherwise")
    p.add_argument("--data", action="append", metavar="DATASET[:WEIGHT]",
                   help="dataset directory or URL; repeat to mix, weighting with :WEIGHT (replaces data.sources)")
    p.add_argument("--eval-data", action="append", metavar="DATASET",
                   help="evaluate on this dataset (its eval split, or its only split) instead of the --data "
                        "datasets' eval split; repeat for several (replaces data.eval_sources)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN from its newest checkpoint, with its config as the base")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --output holds an earlier run (its checkpoints are deleted)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field by its full path, e.g. --set train.lr=5e-4")
    groups = {name: p.add_argument_group(title) for name, title in _SECTIONS.items()}
    for f in field_flags():
        kwargs: dict[str, Any] = {"dest": f"field:{f.path}", "default": None, "help": f.help, "metavar": f.metavar}
        if f.is_bool:
            kwargs.update(nargs="?", const="true")
        if f.path == "model.task":
            kwargs["metavar"] = "{token-classification,sequence-classification,...}"
        groups[f.path.split(".")[0]].add_argument(f.flag, **kwargs)
    return p


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = argparse.ArgumentParser(prog="mlm-train", allow_abbrev=False,
                                description="Train BERT-style encoders and GPT-style decoders on mlm-data "
                                            "shards, fine-tune them, sample from them, export them.")
    sub = p.add_subparsers(dest="command", required=True)
    flags = "[--set SECTION.FIELD=VALUE]... [--FIELD VALUE]..."
    pre = _training_parser(
        sub, "pretrain", help="train (or --resume) a model with MLM (+NSP) or next-token loss",
        usage=f"mlm-train pretrain [--config YAML] [--data DATASET[:WEIGHT]]... [--eval-data DATASET]... "
              f"[--init RUN|CKPT|HF_DIR] [--output RUN | --resume RUN] [--overwrite] {flags}",
        description="Train a model on a pretraining dataset: an MLM encoder, or a causal decoder for "
                    "causal_lm datasets. --init continues from existing weights (domain adaptation). "
                    "Every config field can be set with its own flag.")
    fine = _training_parser(
        sub, "finetune", help="fine-tune an encoder on token or sequence labels",
        usage=f"mlm-train finetune --task token-classification|sequence-classification [--init RUN|CKPT|HF_DIR] "
              f"--data DATASET [--eval-data DATASET] [--config YAML] [--output RUN | --resume RUN] {flags}",
        description="Fine-tune on a labelled dataset, from a pretrained encoder (--init: a run, a checkpoint "
                    "or a Hugging Face BERT directory; new head) or from scratch. Defaults: 3 epochs, lr "
                    "5e-5, 10% warmup. Scores and the majority-label baseline go to RUN/eval.json.")

    gen = sub.add_parser("generate", allow_abbrev=False, help="sample text from a causal-LM run",
                         description="Continue a prompt with a causal LM trained by `mlm-train pretrain`.")
    gen.add_argument("--ckpt", required=True, metavar="RUN|CKPT", help="a run folder (newest checkpoint) or a .pt")
    gen.add_argument("--prompt", required=True, help="text to continue (encoded without special tokens)")
    gen.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="at most this many (default 50)")
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token")
    gen.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens only")
    gen.add_argument("--temperature", type=float, metavar="T", help="divide logits by T before sampling (default 1)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text")
    gen.add_argument("--tokenizer", metavar="JSON", help="tokenizer.json to use instead of the run's own")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")

    exp = sub.add_parser("export", allow_abbrev=False, help="write a checkpoint as a Hugging Face model",
                         description="Write an encoder as a Hugging Face BERT directory (config.json, "
                                     "model.safetensors, tokenizer.json, vocab.txt) that transformers loads.")
    exp.add_argument("--ckpt", required=True, metavar="RUN|CKPT", help="a run folder (newest checkpoint) or a .pt")
    exp.add_argument("--format", choices=["hf"], default="hf", help="hf: Hugging Face transformers (default)")
    exp.add_argument("--output", required=True, metavar="DIR", help="directory or URL to write")

    plot = sub.add_parser("plot", help="draw RUN's loss and accuracy curves into RUN/metrics.png")
    plot.add_argument("run", metavar="RUN")
    plot.add_argument("--out", help="where to write the PNG (default RUN/metrics.png)")
    return p, {"pretrain": pre, "finetune": fine, "generate": gen, "export": exp, "plot": plot}


def cmd_train(args: argparse.Namespace) -> int:
    from mlm_data.config.loading import load_yaml
    from mlm_data.storage import join
    from trainer import train
    from trainer.config import FINETUNE_DEFAULTS, load_pretrain_config

    settings = dict(parse_setting(item) for item in args.set)
    for key, raw in vars(args).items():
        if key.startswith("field:") and raw is not None:
            path = key.removeprefix("field:")
            settings[path] = parse_value(path, _TASK_SPELLINGS.get(raw, raw) if path == "model.task" else raw)
    if args.data:
        settings["data.sources"] = list(args.data)
    if args.eval_data:
        settings["data.eval_sources"] = list(args.eval_data)
    base = FINETUNE_DEFAULTS if args.command == "finetune" else None
    if args.resume:
        if settings.setdefault("output", args.resume) != args.resume:
            raise ConfigError(f"--output {settings['output']} and --resume {args.resume} differ; "
                              "a resumed run keeps writing into its own folder")
        base = load_yaml(join(args.resume, train.CONFIG_NAME))
    cfg = load_pretrain_config(args.config, base=base, settings=settings)
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    run = train.finetune if args.command == "finetune" else train.pretrain
    run(cfg, resume=bool(args.resume), overwrite=args.overwrite)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from trainer.sample import generate_text

    if args.greedy and (args.top_k is not None or args.temperature is not None):
        raise ConfigError("--greedy takes the most likely token; --top-k and --temperature are for sampling: "
                          "give one or the other")
    print(generate_text(args.ckpt, args.prompt, max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                        top_k=args.top_k, temperature=1.0 if args.temperature is None else args.temperature,
                        seed=args.seed, tokenizer=args.tokenizer, device=args.device))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from trainer.export import export_hf

    for url in export_hf(args.ckpt, args.output):
        print(f"wrote {url}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from trainer.plot import plot_run

    print(f"wrote {plot_run(args.run, args.out)}")
    return 0


_COMMANDS = {"pretrain": cmd_train, "finetune": cmd_train, "generate": cmd_generate, "export": cmd_export,
             "plot": cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = commands[args.command]
        known = [s for action in sub._actions for s in action.option_strings]
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u.split("=")[0], known, n=1))
                 else u for u in unknown]
        sub.error(f"unrecognized arguments: {' '.join(hints)}")
    configure_logging()
    return run_command(lambda: _COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
