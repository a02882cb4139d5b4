"""Config loading: every mistake reported at once, with the file and field named."""

from __future__ import annotations

import pickle

import pytest

from mlm_data.config.loading import from_dict, load, parse_setting, to_dict
from mlm_data.config.preprocess import MaskingConfig, PreprocessConfig
from mlm_data.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_and_yaml_values(tmp_path):
    path = write(tmp_path, "seed: 7\ninstances:\n  task: mlm_fullsent\n  max_seq_length: 512\n")
    cfg = load(PreprocessConfig, path)
    assert cfg.seed == 7
    assert cfg.instances.task == "mlm_fullsent"
    assert cfg.instances.max_seq_length == 512
    assert cfg.instances.short_seq_prob == 0.1  # default kept


def test_all_errors_reported_together_with_file_and_suggestion(tmp_path):
    path = write(tmp_path, "instances:\n  max_seq_lenght: 12\n  task: bert\nmasking:\n  probability: 1.5\n")
    with pytest.raises(ConfigError) as e:
        load(PreprocessConfig, path)
    msg = str(e.value)
    assert path in msg
    assert "instances.max_seq_lenght: unknown key; did you mean 'max_seq_length'?" in msg
    assert "instances.task: 'bert' is not allowed" in msg and "'mlm_nsp'" in msg
    assert "masking.probability: must be strictly between 0 and 1, found 1.5" in msg


def test_wrong_types_are_named(tmp_path):
    path = write(tmp_path, "seed: abc\nclean:\n  deduplicate: maybe\n")
    with pytest.raises(ConfigError, match=r"seed: expected an integer, found 'abc'(.|\n)*clean.deduplicate: expected true or false"):
        load(PreprocessConfig, path)


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "seed: 1\ninstances: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: invalid YAML at line \d+"):
        load(PreprocessConfig, path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load(PreprocessConfig, "nope.yaml")


def test_command_line_settings_beat_the_file(tmp_path):
    path = write(tmp_path, "instances:\n  max_seq_length: 128\n  task: mlm_fullsent\n")
    settings = [parse_setting("instances.max_seq_length=256"), parse_setting("masking.whole_word=true"),
                ("input.paths", ["x/*.txt"]), ("output.path", "out")]
    cfg = load(PreprocessConfig, path, settings=settings)
    assert cfg.instances.max_seq_length == 256 and cfg.instances.task == "mlm_fullsent"
    assert cfg.masking.whole_word is True
    assert cfg.input.paths == ("x/*.txt",)
    assert load(PreprocessConfig, path, base={"seed": 3, "instances": {"max_seq_length": 64}}).instances.max_seq_length == 128
    with pytest.raises(ConfigError, match="override 'oops' is not of the form"):
        parse_setting("oops")


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="static masking applies to MLM tasks"):
        load(PreprocessConfig, settings={"instances.task": "causal_lm", "masking.enabled": True})
    with pytest.raises(ConfigError, match="mask_token_fraction \\+ random_token_fraction: must be <= 1"):
        MaskingConfig(mask_token_fraction=0.8, random_token_fraction=0.3)


def test_require_paths():
    with pytest.raises(ConfigError, match=r"missing input.paths \(or --input\) and output.path \(or --output\)"):
        PreprocessConfig().require_paths(source="preprocess")


def test_config_pickles_and_round_trips_through_dict():
    cfg = load(PreprocessConfig, settings={"input.paths": ["a"], "masking.whole_word": True})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert from_dict(PreprocessConfig, to_dict(cfg), source="roundtrip") == cfg


def test_layers_replace_only_the_fields_they_name(tmp_path):
    path = write(tmp_path, "seed: 7\ninstances:\n  max_seq_length: 256\n")
    cfg = load(PreprocessConfig, path, base={"seed": 1, "instances": {"task": "mlm_fullsent", "max_seq_length": 64}},
               settings=[("instances.max_seq_length", 512)])
    assert (cfg.seed, cfg.instances.task, cfg.instances.max_seq_length) == (7, "mlm_fullsent", 512)


def test_every_field_has_one_flag_with_its_docstring_as_help():
    from mlm_data.config.flags import field_flags
    from pipelines.cli import FLAGS as DATA_FLAGS
    from trainer.cli import FLAGS as TRAIN_FLAGS
    from trainer.config import PretrainConfig

    for flags, cls in ((DATA_FLAGS, PreprocessConfig), (TRAIN_FLAGS, PretrainConfig)):
        assert len({f.flag for f in flags}) == len(flags) == len(field_flags(cls))
        assert [f.path for f in flags if not f.help] == []
    by_path = {f.path: f for f in DATA_FLAGS}
    assert by_path["instances.max_seq_length"].flag == "--instances.max-seq-length"
    assert by_path["input.paths"].flag == "--input" and by_path["seed"].flag == "--seed"
    # StaticMaskingConfig inherits its fields (and their docstrings) from MaskingConfig
    assert by_path["masking.probability"].help.startswith("Fraction of a row's maskable tokens")


def test_flag_values_are_read_like_yaml_except_text():
    from pipelines.cli import FLAGS
    from trainer.cli import FLAGS as TRAIN_FLAGS

    flag = {f.path: f for f in [*FLAGS, *TRAIN_FLAGS]}
    assert flag["output.path"].parse("yes") == "yes"  # text stays text (YAML would say True)
    assert flag["tokenizer.path"].parse("null") is None
    assert flag["train.lr"].parse("5e-4") == "5e-4"  # YAML 1.1 text; the loader makes it a float
    assert flag["train.betas"].parse("[0.9, 0.98]") == [0.9, 0.98]
    assert flag["model.task"].parse("token-classification") == "token_classification"
    assert flag["instances.task"].parse("causal-lm") == "causal_lm"
    assert flag["input.paths"].parse(["a.txt", "b/*.txt"]) == ["a.txt", "b/*.txt"]
    assert load(PreprocessConfig, settings=[("output.overwrite", flag["output.overwrite"].parse("true"))]).output.overwrite


def test_a_short_form_section_is_expanded_per_layer_and_its_errors_join_the_rest(tmp_path):
    from trainer.config import PretrainConfig

    path = write(tmp_path, "data:\n  - {path: a, weight: 2}\n  - {path: b, wieght: 1}\nmodel:\n  hidden_sise: 8\n")
    with pytest.raises(ConfigError) as e:
        load(PretrainConfig, path)
    lines = str(e.value).splitlines()
    assert lines[0] == f"mlm-data error: {path}: invalid configuration:"
    assert sorted(lines[1:]) == [
        "  - data.sources[1]: expected {path: DATASET, weight: NUMBER}, found {'path': 'b', 'wieght': 1}",
        "  - model.hidden_sise: unknown key; did you mean 'hidden_size'?"]
    path = write(tmp_path, "data: [{path: a, weight: 2}]\n")
    cfg = load(PretrainConfig, path, settings={"data.num_workers": 2})  # a flag does not drop the file's list
    assert (cfg.data.sources, cfg.data.num_workers) == (("a:2.0",), 2)
