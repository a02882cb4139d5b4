"""Loader options live in one place: ``LoaderOptions``, which the training config's ``data``
section is, validated once and passed whole to the loader and its workers."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from mlm_data.config.loading import load
from mlm_data.errors import ConfigError
from trainer.config import DataConfig, PretrainConfig
from trainer.distributed import Context
from trainer.loading.loader import DataSource, ShardLoader
from trainer.loading.options import LoaderOptions
from trainer.loading.run_loaders import make_eval_loader, make_loader
from trainer.run_log import Progress

from conftest import REPO

CPU = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_the_data_section_is_passed_whole_to_the_loader(nsp, tmp_path):
    cfg = load(PretrainConfig, settings={"data.num_workers": 1, "data.prefetch_shards": 0, "data.fuse_batches": 3,
                                         "data.shuffle_window_shards": 2, "data.cache_dir": str(tmp_path / "c"),
                                         "data.pad_to_max_length": True, "data.masking.whole_word": True,
                                         "train.batch_size": 4})
    assert isinstance(cfg.data, LoaderOptions)
    loader = make_loader(cfg, CPU, [DataSource(str(nsp))], split="train")
    try:
        options = loader._spec.options
        for f in dataclasses.fields(LoaderOptions):
            assert getattr(options, f.name) == getattr(cfg.data, f.name), f.name
        batch = next(iter(loader))
        assert batch["input_ids"].shape[1] == loader.max_seq_length  # pad_to_max_length reached the collator
        assert {p.name for p in (tmp_path / "c").glob("*.arrow")}  # and cache_dir the cache
    finally:
        loader.close()
    evaluation, _ = make_eval_loader(cfg, CPU, [DataSource(str(nsp))], loader.manifest, Progress(1, enabled=False))
    assert evaluation is not None
    # Evaluation reads in order, in the training process; everything else is the run's.
    assert evaluation.num_workers == 0 and not evaluation._spec.shuffle
    assert evaluation._spec.options.cache_dir == str(tmp_path / "c")
    evaluation.close()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("num_workers", -1, "num_workers: must be an integer >= 0, found -1"),
    ("prefetch_shards", -1, "prefetch_shards: must be an integer >= 0, found -1"),
    ("shuffle_window_shards", 0, "shuffle_window_shards: must be an integer >= 1, found 0"),
    ("pad_to_multiple_of", 0, "pad_to_multiple_of: must be an integer >= 1, found 0"),
    ("max_cache_bytes", 0, "max_cache_bytes: must be an integer >= 1, found 0"),
    ("mix_block_size", 0, "mix_block_size: must be an integer >= 1, found 0"),
    ("fuse_batches", 0, "fuse_batches: must be an integer >= 1 or null, found 0"),
    ("cache_dir", "", "cache_dir: must be a folder or null, found ''"),
])
def test_one_rule_per_option_in_the_config_and_the_loader_alike(name, value, message):
    with pytest.raises(ConfigError) as direct:
        LoaderOptions(**{name: value})
    assert message in str(direct.value)
    with pytest.raises(ConfigError) as from_yaml:
        load(PretrainConfig, settings={f"data.{name}": value})
    assert f"data.{message}" in str(from_yaml.value)


def test_every_problem_of_the_section_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        load(PretrainConfig, settings={"data.prefetch_shards": -1, "data.num_workers": -2, "data.eval_split": "",
                                       "data.sources": ["out/a:0"]})
    text = str(e.value)
    for expected in ("data.prefetch_shards: must be", "data.num_workers: must be", "data.eval_split: must not",
                     "data.sources: data source 'out/a:0': weight must be > 0"):
        assert expected in text


def test_prefetch_zero_is_accepted_everywhere(nsp):
    assert load(PretrainConfig, settings={"data.prefetch_shards": 0}).data.prefetch_shards == 0
    loader = ShardLoader([DataSource(str(nsp))], batch_size=8, seed=1, options=LoaderOptions(prefetch_shards=0))
    assert next(iter(loader))["input_ids"].shape[0] == 8
    loader.close()


def test_without_a_cache_dir_the_loader_caches_in_a_temporary_folder_it_removes(nsp):
    loader = ShardLoader([DataSource(str(nsp))], batch_size=8, seed=1)
    next(iter(loader))
    folder = loader._spec.options.cache_dir
    assert folder and os.path.isdir(folder) and any(name.endswith(".arrow") for name in os.listdir(folder))
    loader.close()
    assert not os.path.exists(folder)


def test_the_loader_takes_options_not_loose_keywords(nsp):
    with pytest.raises(TypeError):
        ShardLoader([DataSource(str(nsp))], batch_size=8, seed=1, num_workers=2)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="options: expected LoaderOptions, found dict"):
        ShardLoader([DataSource(str(nsp))], batch_size=8, seed=1, options={"num_workers": 2})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs" / "train").glob("*.yaml")))
def test_the_shipped_configs_load_unchanged(name):
    data = load(PretrainConfig, str(REPO / "configs" / "train" / f"{name}.yaml")).data
    assert isinstance(data, DataConfig) and isinstance(data, LoaderOptions)
