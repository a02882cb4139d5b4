"""Config loading: every mistake reported at once, with the file and field named."""

from __future__ import annotations

import pickle

import pytest

from mlm_data.config.loading import to_dict
from mlm_data.config.preprocess import MaskingConfig, PreprocessConfig, load_preprocess_config
from mlm_data.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_and_yaml_values(tmp_path):
    path = write(tmp_path, "seed: 7\ninstances:\n  task: mlm_fullsent\n  max_seq_length: 512\n")
    cfg = load_preprocess_config(path)
    assert cfg.seed == 7
    assert cfg.instances.task == "mlm_fullsent"
    assert cfg.instances.max_seq_length == 512
    assert cfg.instances.short_seq_prob == 0.1  # default kept


def test_all_errors_reported_together_with_file_and_suggestion(tmp_path):
    path = write(tmp_path, "instances:\n  max_seq_lenght: 12\n  task: bert\nmasking:\n  probability: 1.5\n")
    with pytest.raises(ConfigError) as e:
        load_preprocess_config(path)
    msg = str(e.value)
    assert path in msg
    assert "instances.max_seq_lenght: unknown key; did you mean 'max_seq_length'?" in msg
    assert "instances.task: 'bert' is not allowed" in msg and "'mlm_nsp'" in msg
    assert "masking.probability: must be strictly between 0 and 1, found 1.5" in msg


def test_wrong_types_are_named(tmp_path):
    path = write(tmp_path, "seed: abc\nclean:\n  deduplicate: maybe\n")
    with pytest.raises(ConfigError, match=r"seed: expected an integer, found 'abc'(.|\n)*clean.deduplicate: expected true or false"):
        load_preprocess_config(path)


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "seed: 1\ninstances: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: invalid YAML at line \d+"):
        load_preprocess_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_preprocess_config("nope.yaml")


def test_overrides_and_cli_values_apply_last(tmp_path):
    path = write(tmp_path, "instances:\n  max_seq_length: 128\n")
    cfg = load_preprocess_config(path, overrides=["instances.max_seq_length=256", "masking.whole_word=true"],
                                 extra={"input.paths": ["x/*.txt"], "output.path": "out"})
    assert cfg.instances.max_seq_length == 256
    assert cfg.masking.whole_word is True
    assert cfg.input.paths == ("x/*.txt",)
    with pytest.raises(ConfigError, match="override 'oops' is not of the form"):
        load_preprocess_config(None, overrides=["oops"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="static masking applies to MLM tasks"):
        load_preprocess_config(None, extra={"instances.task": "causal_lm", "masking.enabled": True})
    with pytest.raises(ConfigError, match="mask_token_fraction \\+ random_token_fraction: must be <= 1"):
        MaskingConfig(mask_token_fraction=0.8, random_token_fraction=0.3)


def test_require_paths():
    with pytest.raises(ConfigError, match=r"missing input.paths \(or --input\) and output.path \(or --output\)"):
        PreprocessConfig().require_paths(source="preprocess")


def test_config_pickles_and_round_trips_through_dict():
    cfg = load_preprocess_config(None, extra={"input.paths": ["a"], "masking.whole_word": True})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    from mlm_data.config.loading import from_dict

    assert from_dict(PreprocessConfig, to_dict(cfg), source="roundtrip") == cfg
