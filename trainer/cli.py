"""``mlm-train``: pretrain and fine-tune on mlm-data shards, sample, export, plot.

``pretrain`` (MLM encoders, causal decoders, continued pretraining with ``--init``) and
``finetune`` (token or sequence labels) share one config and one set of flags; ``generate``
samples from a causal-LM run, ``export --format hf`` writes an encoder for ``transformers``.

Thin by design: parse flags, build a config, call one function. Every config field has a flag
(``mlm_data.config.flags``) named after its path below the section (``train.max_steps`` →
``--max-steps``, ``model.hidden_size`` → ``--hidden-size``, ``data.masking.whole_word`` →
``--masking.whole-word``, ``data.sources`` → ``--data``), and ``--set section.field=value``
reaches any field by its full path. Precedence, lowest first: defaults (for ``finetune``,
``config.FINETUNE_DEFAULTS``), the resumed run's config.yaml, ``--config``, ``--set``, the field
flags: a value given on the command line always beats the file, also across ``max_steps`` /
``epochs`` and ``warmup_steps`` / ``warmup_fraction`` (``loading.load``).

Errors a user can fix print as one line, ``mlm-train error: ...``, and exit 2; anything else is
a bug and keeps its traceback. Run it under ``torchrun --nproc_per_node N -m trainer.cli pretrain ...`` for DDP.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mlm_data.config.flags import ArgumentParser, add_field_flags, field_flags, given_fields
from mlm_data.config.loading import parse_setting
from mlm_data.console import configure_logging, run_command
from mlm_data.errors import ConfigError
from trainer.config import PretrainConfig

#: One flag per config field, named by its path below the section; the datasets have names of
#: their own.
FLAGS = field_flags(PretrainConfig, drop_section=True,
                    names={"data.sources": "--data", "data.eval_sources": "--eval-data"},
                    metavars={"data.sources": "DATASET[:WEIGHT]", "data.eval_sources": "DATASET",
                              "model.task": "{token-classification,sequence-classification,...}"})
_SECTIONS = {"model": "model (what network to build)", "train": "train (how to optimise it)",
             "data": "data (what to feed it)", "output": "run folder", "init": "warm start"}


def _training_parser(sub: Any, command: str, *, help: str, usage: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(command, help=help, usage=usage, description=description)
    p.add_argument("--config", help="YAML config (configs/train/*.yaml); defaults otherwise")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN from its newest checkpoint, with its config as the base")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --output holds an earlier run (its checkpoints are deleted)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field by its full path, e.g. --set train.lr=5e-4")
    add_field_flags(p, FLAGS, sections=_SECTIONS)
    return p


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = ArgumentParser(prog="mlm-train", description="Train BERT-style encoders and GPT-style decoders on "
                       "mlm-data shards, fine-tune them, sample from them, export them.")
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

    gen = sub.add_parser("generate", help="sample text from a causal-LM run",
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

    exp = sub.add_parser("export", help="write a checkpoint as a Hugging Face model",
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
    from mlm_data.config.loading import load, load_yaml
    from mlm_data.storage import join
    from trainer import train
    from trainer.config import FINETUNE_DEFAULTS

    # --set first, so that a field's own flag beats a --set of the same field
    settings = dict([*(parse_setting(item) for item in args.set), *given_fields(args, FLAGS)])
    base = FINETUNE_DEFAULTS if args.command == "finetune" else None
    if args.resume:
        if settings.setdefault("output", args.resume) != args.resume:
            raise ConfigError(f"--output {settings['output']} and --resume {args.resume} differ; "
                              "a resumed run keeps writing into its own folder")
        base = load_yaml(join(args.resume, train.CONFIG_NAME))
    cfg = load(PretrainConfig, args.config, base=base, settings=settings)
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
    commands[args.command].reject_unknown(unknown)
    configure_logging()
    return run_command(lambda: _COMMANDS[args.command](args), program="mlm-train")


if __name__ == "__main__":
    sys.exit(main())
