"""Several datasets mixed by weight: exact proportions, determinism, resume, and the checks that
refuse datasets which cannot share a batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlm_data.errors import ConfigError
from trainer.loading.loader import DataSource, ShardLoader

from test_loader_support import assert_same_batches, copy_dataset, open_loader, real_rows, take


def mixed(a, b, wa=0.7, wb=0.3, **kw) -> ShardLoader:
    kw.setdefault("batch_size", 50)
    kw.setdefault("seed", 9)
    return open_loader([DataSource(str(a), wa), DataSource(str(b), wb)], **kw)


def test_proportions_are_exact_per_block_and_each_source_cycles_its_epochs(fullsent, docsent):
    loader = mixed(fullsent, docsent)
    n_a = ShardLoader([DataSource(str(fullsent))], batch_size=1, seed=0).rows_per_epoch
    n_b = loader.rows_per_epoch - n_a
    batches = take(iter(loader), 40)  # 2,000 samples: two blocks of 1,000
    assert all(b["sample_mask"].all() for b in batches)
    rows = real_rows(batches)
    from_a = rows < n_a
    assert from_a.sum() == 1400
    per_batch = [float((b["row_id"] < n_a).float().mean()) for b in batches]
    assert 0.4 < min(per_batch) and max(per_batch) < 0.95  # keyed order: about 0.7 in every batch
    # each source reads its rows as its own exact epochs: no repeat before all were seen
    for source_rows, n in ((rows[from_a], n_a), (rows[~from_a] - n_a, n_b)):
        first = source_rows[:n]
        assert len(np.unique(first)) == len(first)
        if len(source_rows) >= n:
            assert np.array_equal(np.sort(first), np.arange(n))


def test_mixture_is_deterministic_across_workers_and_resume(fullsent, docsent):
    reference = take(iter(mixed(fullsent, docsent, batch_size=16)), 12)
    assert_same_batches(take(iter(mixed(fullsent, docsent, batch_size=16, num_workers=2)), 12), reference)
    first = mixed(fullsent, docsent, batch_size=16)
    take(iter(first), 5)
    resumed = mixed(fullsent, docsent, batch_size=16, num_workers=1)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert_same_batches(take(iter(resumed), 7), reference[5:])
    other = take(iter(mixed(fullsent, docsent, batch_size=16, seed=10)), 12)
    assert not all((x["row_id"] == y["row_id"]).all() for x, y in zip(other, reference))


def test_one_epoch_of_a_mixture_reads_every_row_of_every_source_once(fullsent, docsent):
    loader = mixed(fullsent, docsent, batch_size=16, world_size=2, rank=1)
    rows = np.concatenate([real_rows(loader.one_epoch()),
                           real_rows(mixed(fullsent, docsent, batch_size=16, world_size=2).one_epoch())])
    assert np.array_equal(np.sort(rows), np.arange(loader.rows_per_epoch))


def test_weights_must_match_on_resume(fullsent, docsent):
    state = mixed(fullsent, docsent).state_dict()
    with pytest.raises(ConfigError, match=r"sources\[0\].weight: state has 0.7, this loader has 0.5"):
        mixed(fullsent, docsent, 0.5, 0.5).load_state_dict(state)


def test_different_tokenizers_are_refused_naming_both(fullsent, tmp_path):
    other = copy_dataset(fullsent, tmp_path / "retokenized")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=rf"cannot mix these datasets[^\n]*\n  - {other} was tokenized with sha256 "
                                          rf"000000000000…, {fullsent} with [0-9a-f]{{12}}…"):
        mixed(fullsent, other)


def test_incompatible_tasks_are_refused(fullsent, nsp, docsent):
    with pytest.raises(ConfigError, match=r"- \S+ has task 'mlm_nsp', \S+ has 'mlm_fullsent' \(only mlm_fullsent and "
                                          r"mlm_docsent share a batch layout\)"):
        mixed(fullsent, nsp)
    with pytest.raises(ConfigError, match="length_bucketing: not supported when mixing"):
        mixed(fullsent, docsent, length_bucketing=True)
    with pytest.raises(ConfigError, match=r"sources\[1\].weight: must be a positive number"):
        mixed(fullsent, docsent, 0.7, 0.0)
