"""The trainer's config and command line, without training: flags, precedence, errors, plots."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from mlm_data.config.loading import load, to_dict
from mlm_data.errors import ConfigError
from trainer import cli
from trainer import train as train_module
from trainer.config import (
    ModelConfig,
    PretrainConfig,
    TrainConfig,
    check_resume_compatible,
    parse_source,
    resolve_for_dataset,
    resolve_steps,
)
from trainer.optim import warmup_warning
from trainer.run_log import MetricsLog, Progress, read_metrics

from conftest import REPO

TINY_YAML = str(REPO / "configs" / "train" / "bert-tiny.yaml")


@pytest.fixture
def captured(monkeypatch):
    """Run ``mlm-train pretrain`` (or ``finetune`` when the first argument says so) up to the
    point where it would train; return the config."""
    seen = {}

    def fake_train(cfg, *, resume=False, overwrite=False):
        seen["cfg"], seen["resume"] = cfg, resume

    monkeypatch.setattr(train_module, "pretrain", fake_train)
    monkeypatch.setattr(train_module, "finetune", fake_train)

    def run(*argv):
        if argv[:1] != ("finetune",):
            argv = ("pretrain", *argv)
        assert cli.main(list(argv)) == 0
        return seen["cfg"]

    return run


def test_field_flags_override_the_yaml(captured):
    cfg = captured("--config", TINY_YAML, "--data", "out/a", "--output", "runs/x", "--max-steps", "3",
                   "--batch-size", "4", "--lr", "5e-4", "--betas", "[0.9, 0.98]", "--masking.whole-word",
                   "--layer-norm", "pre", "--clip-grad-norm", "null", "--num-workers", "2")
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.train.lr) == (3, 4, 5e-4)
    assert cfg.train.betas == (0.9, 0.98) and cfg.train.clip_grad_norm is None
    assert cfg.data.masking.whole_word is True and cfg.model.layer_norm == "pre"
    assert cfg.data.num_workers == 2 and cfg.data.sources == ("out/a",) and cfg.output == "runs/x"
    assert cfg.model.hidden_size == 128  # untouched fields keep the YAML's values


def test_precedence_yaml_then_set_then_flags(captured):
    cfg = captured("--config", TINY_YAML, "--set", "train.lr=2e-3", "--set", "train.seed=7", "--lr", "1e-3",
                   "--set", "data.masking.probability=0.2", "--compile", "false")
    assert cfg.train.lr == 1e-3 and cfg.train.seed == 7 and cfg.data.masking.probability == 0.2
    assert cfg.train.compile is False


def test_data_flags_replace_sources_and_take_weights(captured):
    cfg = captured("--set", "data.sources=[x]", "--data", "s3://bucket/a:0.75", "--data", "b")
    assert cfg.data.sources == ("s3://bucket/a:0.75", "b")


@pytest.mark.parametrize(("text", "expected"), [
    ("out/bert", ("out/bert", 1.0)),
    ("out/bert:2", ("out/bert", 2.0)),
    ("gs://bucket/data:0.5", ("gs://bucket/data", 0.5)),
    ("s3://bucket/data", ("s3://bucket/data", 1.0)),
    ("memory://ds", ("memory://ds", 1.0)),
    ("dir:with:colons", ("dir:with:colons", 1.0)),
])
def test_parse_source(text, expected):
    assert parse_source(text) == expected


def test_yaml_mixtures_are_mappings_of_path_and_weight(tmp_path):
    listed = tmp_path / "listed.yaml"
    listed.write_text("data:\n  - {path: s3://bucket/wiki, weight: 0.7}\n  - {path: 'out/books:2'}\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("data:\n  sources:\n    - {path: out/a, weight: 3}\n    - out/b:0.5\n  num_workers: 2\n")
    assert [parse_source(s) for s in load(PretrainConfig, str(listed)).data.sources] == [
        ("s3://bucket/wiki", 0.7), ("out/books:2", 1.0)]
    cfg = load(PretrainConfig, str(nested))
    assert [parse_source(s) for s in cfg.data.sources] == [("out/a", 3.0), ("out/b", 0.5)]
    assert cfg.data.num_workers == 2


def test_malformed_mixture_entries_name_the_entry(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  - {path: a, wieght: 0.7}\n  - {path: b, weight: lots}\n  - {path: c, weight: 0}\n")
    with pytest.raises(ConfigError) as e:
        load(PretrainConfig, str(path))
    text = str(e.value)
    assert str(path) in text and "data.sources[0]: expected {path: DATASET, weight: NUMBER}" in text
    assert "data.sources[1].weight: expected a number, found 'lots'" in text


def test_a_zero_weight_is_refused():
    with pytest.raises(ConfigError, match="weight must be > 0"):
        parse_source("out/a:0")


def test_unknown_flag_is_one_line_with_the_close_one(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["pretrain", "--max-step", "3"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "mlm-train error: unknown flag --max-step; did you mean --max-steps? (see `mlm-train pretrain --help`)"]


def test_bad_values_are_reported_together_by_field(capsys):
    assert cli.main(["pretrain", "--config", TINY_YAML, "--lr", "fast", "--num-heads", "3",
                     "--masking.probability", "1.5", "--schedule", "step"]) == 2
    err = capsys.readouterr().err
    assert "bert-tiny.yaml: invalid configuration" in err
    assert "train.lr: expected a number, found 'fast'" in err
    assert "train.schedule: 'step' is not allowed; expected one of 'linear', 'cosine'" in err
    assert "model.num_heads: must divide hidden_size 128, found 3" in err
    assert "data.masking.probability: must be strictly between 0 and 1, found 1.5" in err
    assert "Traceback" not in err


def test_missing_data_and_output_are_clear(capsys):
    assert cli.main(["pretrain", "--config", TINY_YAML]) == 2
    assert capsys.readouterr().err.strip() == (
        "mlm-train error: output: no run folder given; pass --output RUN")


def test_resume_and_output_must_agree(capsys, tmp_path):
    assert cli.main(["pretrain", "--resume", str(tmp_path / "a"), "--output", str(tmp_path / "b")]) == 2
    assert "a resumed run keeps writing into its own folder" in capsys.readouterr().err


def test_every_config_field_has_exactly_one_flag():
    flags = cli.FLAGS
    names = [f.flag for f in flags]
    assert len(names) == len(set(names))

    def leaves(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            sub = getattr(cls(), f.name)
            if dataclasses.is_dataclass(sub):
                yield from leaves(type(sub), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", tp

    assert {f.path for f in flags} == {p for p, _ in leaves(PretrainConfig)}
    by_path = {f.path: f for f in flags}
    assert (by_path["data.sources"].flag, by_path["data.eval_sources"].flag) == ("--data", "--eval-data")
    assert by_path["train.max_steps"].flag == "--max-steps"
    assert by_path["data.masking.whole_word"].flag == "--masking.whole-word"
    assert by_path["output"].flag == "--output"
    assert by_path["train.lr"].help == "Peak learning rate, reached at the end of warmup."
    # The data section's loader options are LoaderOptions fields: their help comes from there.
    assert by_path["data.num_workers"].help.startswith("Loader worker processes per rank")


def test_help_lists_fields_by_section(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    out = capsys.readouterr().out
    for text in ("model (what network to build):", "train (how to optimise it):", "--hidden-size",
                 "--masking.probability", "Peak learning rate"):
        assert text in out


@pytest.mark.parametrize("name", ["bert-tiny", "bert-base"])
def test_shipped_configs_load(name):
    cfg = load(PretrainConfig, str(REPO / "configs" / "train" / f"{name}.yaml"))
    assert cfg.model.vocab_size is None and cfg.model.nsp_head is None  # filled from the dataset


def test_yaml_mistakes_are_collected_with_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden_sise: 64\ntrain:\n  warmup_steps: -1\n  betas: [0.9]\n")
    with pytest.raises(ConfigError) as e:
        load(PretrainConfig, str(path))
    text = str(e.value)
    assert str(path) in text
    assert "model.hidden_sise: unknown key; did you mean 'hidden_size'?" in text
    assert "train.warmup_steps: must be >= 0, found -1" in text
    assert "train.betas: must be two numbers in [0, 1), found [0.9]" in text


def test_resolve_for_dataset_fills_and_checks():
    cfg = PretrainConfig(model=ModelConfig(max_position_embeddings=128))
    resolved = resolve_for_dataset(cfg, vocab_size=8000, task="mlm_nsp", max_seq_length=128, source="ds")
    assert resolved.model.vocab_size == 8000 and resolved.model.nsp_head is True
    full_sentences = resolve_for_dataset(cfg, vocab_size=8000, task="mlm_fullsent", max_seq_length=64, source="ds")
    assert full_sentences.model.nsp_head is False
    bad = PretrainConfig(model=ModelConfig(vocab_size=100, max_position_embeddings=64, nsp_head=True))
    with pytest.raises(ConfigError) as e:
        resolve_for_dataset(bad, vocab_size=8000, task="mlm_docsent", max_seq_length=128, source="ds")
    assert "model.vocab_size: 100 is smaller than the dataset vocabulary (8000)" in str(e.value)
    assert "model.max_position_embeddings: 64 is smaller than the dataset max_seq_length (128)" in str(e.value)
    assert "model.nsp_head: the dataset task 'mlm_docsent' has no next-sentence labels" in str(e.value)


FINETUNE_YAML = str(REPO / "configs" / "train" / "finetune-classify.yaml")


def test_a_flag_beats_the_files_epochs(captured):
    cfg = captured("finetune", "--config", FINETUNE_YAML, "--max-steps", "30")
    assert (cfg.train.max_steps, cfg.train.epochs) == (30, None)
    assert cfg.train.warmup_fraction == 0.1  # the file's, untouched
    assert resolve_steps(cfg, steps_per_epoch=15).train.max_steps == 30  # not 3 epochs x 15


def test_the_last_layer_decides_between_two_ways_of_saying_it(captured):
    assert captured("--config", TINY_YAML, "--epochs", "2").train.epochs == 2.0  # over the file's max_steps
    cfg = captured("finetune", "--warmup-steps", "10")  # over the finetune defaults' warmup_fraction
    assert (cfg.train.warmup_steps, cfg.train.warmup_fraction, cfg.train.epochs) == (10, None, 3.0)
    cfg = captured("finetune", "--config", TINY_YAML)  # a file's max_steps over the defaults' epochs
    assert (cfg.train.max_steps, cfg.train.epochs, cfg.train.warmup_steps, cfg.train.warmup_fraction) == (
        600, None, 60, None)


@pytest.mark.parametrize("argv,where", [
    (["--max-steps", "30", "--epochs", "2"], "the command line"),
    (["--set", "train.epochs=2", "--max-steps", "30"], "the command line"),
    (["--config", "{both}"], "{both}"),
])
def test_both_from_the_same_place_are_refused_in_one_line(argv, where, tmp_path, capsys):
    both = tmp_path / "both.yaml"
    both.write_text("train:\n  max_steps: 100\n  epochs: 3\n")
    argv = [a.format(both=both) for a in argv]
    assert cli.main(["pretrain", "--output", str(tmp_path / "run"), *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mlm-train error: {where.format(both=both)} gives both train.max_steps and train.epochs, two ways to "
        "say the same thing; keep one"]


def test_warmup_as_long_as_the_run_is_warned_about():
    assert warmup_warning(TrainConfig(warmup_steps=10, max_steps=30)) is None
    assert warmup_warning(TrainConfig(warmup_steps=60, max_steps=30)) == (
        "warning: warmup_steps (60) >= max_steps (30): the whole run is warmup, so the learning rate never "
        "decays; lower --warmup-steps or raise --max-steps")


def test_resume_may_change_only_what_does_not_alter_the_next_step():
    saved = to_dict(load(PretrainConfig, TINY_YAML))
    longer = load(PretrainConfig, TINY_YAML, settings={"train.max_steps": 900, "data.num_workers": 4,
                                                       "train.eval_every": 5})
    check_resume_compatible(saved, to_dict(longer), source="run")
    changed = load(PretrainConfig, TINY_YAML, settings={"train.lr": 0.5, "data.masking.probability": 0.3})
    with pytest.raises(ConfigError) as e:
        check_resume_compatible(saved, to_dict(changed), source="run")
    assert "train.lr: the checkpoint has 0.0015, this command gives 0.5" in str(e.value)
    assert "data.masking.probability: the checkpoint has 0.15, this command gives 0.3" in str(e.value)


def test_metrics_log_drops_records_after_the_resumed_checkpoint(tmp_path):
    run = str(tmp_path)
    log = MetricsLog(run, resume_step=None)
    for step in (1, 2, 3, 4):
        log.append({"step": step, "split": "train", "loss": 1.0 / step})
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    log = MetricsLog(run, resume_step=2)
    log.append({"step": 3, "split": "train", "loss": 0.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(run)] == [(1, 1.0), (2, 0.5), (3, 0.5)]


def test_metrics_on_an_object_store_are_published_on_flush():
    run = "memory://metrics-test/run"
    log = MetricsLog(run, resume_step=None)
    log.append({"step": 1, "split": "train", "loss": 2.0})
    assert read_metrics(run) == []  # no append on object stores: one PUT per flush
    log.flush()
    assert read_metrics(run) == [{"step": 1, "split": "train", "loss": 2.0}]


def test_progress_prints_lines_when_not_a_terminal(capsys):
    import sys

    progress = Progress(100, stream=sys.stderr)
    progress.update(10, {"loss": 2.5, "mlm_accuracy": 0.125, "lr": 1e-3, "tokens_per_s": 12345.0},
                    elapsed=20.0, steps_done=10)
    progress.message("eval line")
    assert capsys.readouterr().err == (
        "step 10/100  10% | loss 2.5000 | mlm acc 0.125 | lr 1.00e-03 | 12.3k tok/s | 0:20<3:00\neval line\n")


def test_plot_command_draws_a_png(tmp_path, capsys):
    records = [{"step": s, "split": "train", "loss": 9.0 - s, "mlm_accuracy": 0.01 * s} for s in (1, 2, 3)]
    records.append({"step": 3, "split": "validation", "loss": 6.5, "mlm_accuracy": 0.05,
                    "unigram_accuracy": 0.04})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli.main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path}/metrics.png"
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no " in capsys.readouterr().err
