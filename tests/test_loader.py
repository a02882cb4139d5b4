"""ShardLoader: batches equal the shards' rows, exact epochs over ranks × workers, exact resume,
verified and cached shards, and batches a HF BERT accepts as they are."""

from __future__ import annotations

import json
import math

import fsspec
import numpy as np
import pytest
import torch

from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError, DatasetError
from trainer.loading.hf_batch import hf_inputs
from trainer.loading.loader import ShardLoader

from test_loader_support import (
    assert_same_batches,
    copy_dataset,
    flip_byte,
    iter_epoch,
    open_loader,
    read_rows,
    real_rows,
    take,
)


def make(path, **kw) -> ShardLoader:
    kw.setdefault("batch_size", 8)
    kw.setdefault("seed", 7)
    return open_loader([path], **kw)


def test_batches_hold_the_shards_rows_padded_and_typed(nsp):
    rows = read_rows(nsp)
    ids, seg_b, nsp_label = (rows.column(c).to_pylist() for c in ("input_ids", "segment_b_start", "next_sentence_label"))
    loader = make(nsp, masking=None, batch_size=16)
    pad = loader.special_tokens["pad"]
    for batch in take(iter(loader), 6):
        assert batch["input_ids"].dtype == torch.int64 and batch["sample_mask"].dtype == torch.bool
        b, t = batch["input_ids"].shape
        lengths = batch["attention_mask"].sum(1)
        assert t % 8 == 0 and t == math.ceil(int(lengths.max()) / 8) * 8
        assert (batch["labels"] == -100).all()  # masking=None: nothing to predict
        for i, r in enumerate(batch["row_id"].tolist()):
            n = len(ids[r])
            assert lengths[i] == n
            assert batch["input_ids"][i, :n].tolist() == ids[r]
            assert (batch["input_ids"][i, n:] == pad).all()
            assert batch["token_type_ids"][i].tolist() == [0] * seg_b[r] + [1] * (n - seg_b[r]) + [0] * (t - n)
            assert batch["next_sentence_label"][i] == nsp_label[r]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_every_row_exactly_once_per_epoch(nsp, world_size, num_workers):
    seen, padding = [], 0
    for rank in range(world_size):
        loader = make(nsp, batch_size=5, rank=rank, world_size=world_size, num_workers=num_workers)
        batches = list(iter_epoch(loader))
        assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0
        seen.append(real_rows(batches))
        for b in batches:
            pad_rows = ~b["sample_mask"]
            padding += int(pad_rows.sum())
            assert (b["labels"][pad_rows] == -100).all() and (b["next_sentence_label"][pad_rows] == -100).all()
    n = loader.rows_per_epoch
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    assert loader.steps_per_epoch == math.ceil(n / (5 * world_size))
    assert padding == loader.steps_per_epoch * 5 * world_size - n


def test_one_epoch_is_exact_unshuffled_and_leaves_state_alone(nsp):
    loader = make(nsp, shuffle=False, batch_size=6, world_size=2, rank=1)
    first = take(iter(loader), 2)
    state = loader.state_dict()
    rows = real_rows(loader.one_epoch())
    other = real_rows(make(nsp, shuffle=False, batch_size=6, world_size=2, rank=0).one_epoch())
    n = loader.rows_per_epoch
    assert np.array_equal(np.sort(np.concatenate([rows, other])), np.arange(n))
    assert np.array_equal(rows[:6], np.arange(6, 12))  # rank 1 takes positions 6..11 of step 0
    assert loader.state_dict() == state
    assert_same_batches(take(make(nsp, shuffle=False, batch_size=6, world_size=2, rank=1).one_epoch(), 2), first)


def test_order_is_keyed_by_seed_and_epoch(nsp):
    loader = make(nsp, seed=1, batch_size=32)
    epoch0, epoch1 = real_rows(iter_epoch(loader)), real_rows(iter_epoch(loader))
    n = loader.rows_per_epoch
    assert np.array_equal(np.sort(epoch0), np.arange(n)) and np.array_equal(np.sort(epoch1), np.arange(n))
    assert not np.array_equal(epoch0, epoch1)
    assert np.array_equal(real_rows(iter_epoch(make(nsp, seed=1, batch_size=32))), epoch0)
    assert not np.array_equal(real_rows(iter_epoch(make(nsp, seed=2, batch_size=32))), epoch0)
    # The order does not depend on the batch geometry: only on (seed, epoch, position).
    assert np.array_equal(real_rows(iter_epoch(make(nsp, seed=1, batch_size=7))), epoch0)
    assert np.array_equal(real_rows(iter_epoch(make(nsp, shuffle=False, batch_size=32))), np.arange(n))


def test_shuffle_window_keeps_reads_within_a_few_shards(nsp):
    loader = make(nsp, seed=3, batch_size=16, shuffle_window_shards=2, masking=None)
    offsets = np.cumsum([0] + [s.num_rows for s in loader.manifest.shards_for("train")])
    shard = np.searchsorted(offsets, real_rows(iter_epoch(loader)), side="right") - 1
    # Consecutive windows of two shards: each shard's rows are contiguous with one partner's.
    windows, start = [], 0
    while start < len(shard):
        pair = set(shard[start:start + 1].tolist())
        end = start
        while end < len(shard) and (shard[end] in pair or len(pair) < 2):
            pair.add(int(shard[end]))
            end += 1
        windows.append(pair)
        start = end
    assert [len(w) for w in windows[:-1]] == [2] * (len(windows) - 1)
    assert sorted(s for w in windows for s in w) == list(range(len(offsets) - 1))


@pytest.mark.parametrize(("before", "after", "stop"), [(0, 2, 5), (2, 1, -3), (1, 0, 0)])
def test_resume_gives_identical_batches(fullsent, before, after, stop):
    """Stop after k batches (k counted from the end of epoch 0 when <= 0), save, resume with
    another worker count: the following batches equal those of an uninterrupted run."""
    reference_loader = make(fullsent, batch_size=16, num_workers=before)
    steps = reference_loader.steps_per_epoch
    k = stop if stop > 0 else steps + stop
    reference = take(iter(reference_loader), k + 6)
    first = make(fullsent, batch_size=16, num_workers=before)
    assert_same_batches(take(iter(first), k), reference[:k])
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(fullsent, batch_size=16, num_workers=after)
    resumed.load_state_dict(state)
    assert_same_batches(take(iter(resumed), 6), reference[k:])


@pytest.mark.parametrize(("fuse", "num_workers"), [(3, 0), (5, 2)])
def test_batches_built_together_equal_batches_built_alone(nsp, fuse, num_workers):
    """Workers collate several batches in one pass; widths, masks and padding rows must not
    notice (an epoch end, with its cut padding rows, falls inside a fused group here)."""
    alone = make(nsp, batch_size=6, world_size=2, rank=1, fuse_batches=1)
    together = make(nsp, batch_size=6, world_size=2, rank=1, fuse_batches=fuse, num_workers=num_workers)
    n = alone.steps_per_epoch + 4
    assert_same_batches(take(iter(together), n), take(iter(alone), n))


def test_state_counts_batches_delivered_not_prefetched(nsp):
    loader = make(nsp, num_workers=2)
    reference = take(iter(make(nsp)), 6)
    it = iter(loader)
    assert_same_batches(take(it, 3), reference[:3])
    assert loader.state_dict()["position"] == 3 * 8 and loader.state_dict()["step"] == 3
    assert_same_batches(take(iter(loader), 3), reference[3:])  # a new iterator continues
    with pytest.raises(RuntimeError, match="stale"):
        next(it)


def test_load_state_refuses_what_would_change_the_data(nsp, fullsent):
    state = make(nsp).state_dict()
    with pytest.raises(ConfigError, match=r"batch_size: state has 8, this loader has 4.*allow_geometry_change"):
        make(nsp, batch_size=4).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"seed: state has 7.*masking: state has"):
        make(nsp, seed=8, masking=None).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"sources\[0\]: dataset .*fullsent differs"):
        make(fullsent).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a mlm-data/loader-state"):
        make(nsp).load_state_dict({"epoch": 0})


def test_resume_with_new_geometry_finishes_the_epoch_exactly(nsp):
    first = make(nsp, batch_size=8)
    done = real_rows(take(iter(first), 10))
    state = first.state_dict()
    rest = []
    for rank in range(3):
        loader = make(nsp, batch_size=5, world_size=3, rank=rank)
        loader.load_state_dict(state, allow_geometry_change=True)
        it = iter(loader)
        while loader.epoch == 0:
            rest.append(real_rows([next(it)]))
    assert np.array_equal(np.sort(np.concatenate([done, *rest])), np.arange(first.rows_per_epoch))


def test_directory_without_manifest_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        make(tmp_path)


def test_unknown_split_is_a_config_error(nsp):
    with pytest.raises(ConfigError, match=r"split 'test' has no rows; the dataset has train, validation"):
        make(nsp, split="test")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupted_shard_stops_with_its_name(nsp, tmp_path, num_workers):
    root = copy_dataset(nsp, tmp_path / "ds")
    victim = Manifest.load(str(root)).shards_for("train")[2].path
    flip_byte(root / victim)
    loader = make(root, num_workers=num_workers, shuffle=False, shuffle_window_shards=1)
    with pytest.raises(DatasetError, match=victim.replace(".", r"\.") + ".*checksum mismatch"):
        list(iter_epoch(loader))


def test_reads_from_an_fsspec_url_through_the_cache(nsp, tmp_path):
    fs = fsspec.filesystem("memory")
    for path in nsp.rglob("*"):
        if path.is_file():
            fs.pipe(f"/loader-test/{path.relative_to(nsp)}", path.read_bytes())
    cache = tmp_path / "cache"
    remote = open_loader(["memory://loader-test"], batch_size=8, seed=7, cache_dir=str(cache))
    assert_same_batches(take(iter(remote), 30), take(iter(make(nsp)), 30))
    cached = sorted(p.name for p in cache.glob("*.arrow"))
    assert cached == sorted(s.sha256 + ".arrow" for s in remote.manifest.shards_for("train"))
    assert not list(cache.glob(".tmp-*"))


def test_transient_read_errors_are_retried(nsp, tmp_path, monkeypatch, caplog):
    from fsspec.implementations.local import LocalFileSystem

    real = LocalFileSystem.cat_file
    failed: set[str] = set()

    def flaky(self, path, *args, **kwargs):
        if path.endswith(".arrow") and path not in failed:
            failed.add(path)
            raise ConnectionResetError("connection reset by peer")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "cat_file", flaky)
    monkeypatch.setenv("MLM_DATA_RETRY_BASE_DELAY", "0.01")
    with caplog.at_level("WARNING", logger="mlm_data.storage"):
        batches = take(iter(make(nsp, cache_dir=str(tmp_path / "c"))), 3)
    assert len(batches) == 3 and failed
    assert "transient error" in caplog.text


def test_cache_stays_bounded_and_evicts_only_idle_shards(nsp, tmp_path, monkeypatch):
    import trainer.loading.shard_cache

    entries = Manifest.load(str(nsp)).shards_for("train")
    fetched = []
    real_fetch = trainer.loading.shard_cache.fetch_shard
    monkeypatch.setattr(trainer.loading.shard_cache, "fetch_shard", lambda url, **kw: fetched.append(url) or real_fetch(url, **kw))
    cache = tmp_path / "cache"
    loader = make(nsp, cache_dir=str(cache), shuffle_window_shards=1, prefetch_shards=1, fuse_batches=1,
                  max_cache_bytes=max(s.num_bytes for s in entries))
    batches = take(iter(loader), 3 * loader.steps_per_epoch)
    assert_same_batches(batches, take(iter(make(nsp, shuffle_window_shards=1)), len(batches)))
    loader.close()  # waits for a prefetch that may be between publishing a shard and evicting
    # What stays: the shards a batch may read (two windows of one shard) and the newest fetch.
    assert len(list(cache.glob("*.arrow"))) <= 3 < len(entries)
    assert len(fetched) > len(entries)  # evicted shards were fetched (and verified) again


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_persistent_cache_rehashes_a_shard_on_first_use(nsp, tmp_path, caplog, num_workers):
    cache = tmp_path / "cache"
    first = make(nsp, cache_dir=str(cache))
    reference = take(iter(first), first.steps_per_epoch)
    first.close()
    victim = sorted(cache.glob("*.arrow"))[0]
    flip_byte(victim, offset=victim.stat().st_size // 2)  # same size, other rows
    later = make(nsp, cache_dir=str(cache), num_workers=num_workers)  # a later run, its own process(es)
    with caplog.at_level("WARNING", logger="trainer.loading.shard_cache"):
        assert_same_batches(take(iter(later), later.steps_per_epoch), reference)
    later.close()
    if num_workers == 0:  # a worker's log goes to its own process
        assert f"{victim.name} does not match its sha256 any more (changed on disk); fetching it again" in caplog.text
    import hashlib

    assert hashlib.sha256(victim.read_bytes()).hexdigest() + ".arrow" == victim.name  # healed


def test_workers_and_loaders_can_share_one_cache_dir(nsp, tmp_path):
    cache = str(tmp_path / "shared")
    a = iter(make(nsp, num_workers=2, cache_dir=cache, prefetch_shards=4))
    b = iter(make(nsp, num_workers=2, cache_dir=cache, shuffle_window_shards=1))
    got_a, got_b = [], []
    for _ in range(40):
        got_a.append(next(a))
        got_b.append(next(b))
    assert_same_batches(got_a, take(iter(make(nsp)), 40))
    assert_same_batches(got_b, take(iter(make(nsp, shuffle_window_shards=1)), 40))
    import hashlib

    for path in (tmp_path / "shared").glob("*.arrow"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() + ".arrow" == path.name
    assert not list((tmp_path / "shared").glob(".tmp-*"))


def test_length_bucketing_cuts_padding_and_keeps_epochs_exact(docsent):
    """Document-bounded rows vary in length: sorted buckets leave almost no padding."""

    def epoch(bucketing, rank=0):
        loader = make(docsent, batch_size=8, world_size=2, rank=rank, length_bucketing=bucketing, pad_to_multiple_of=1)
        return list(iter_epoch(loader))

    def padding(batches):
        return sum(int((1 - b["attention_mask"]).sum()) for b in batches)

    plain, bucketed = epoch(False), epoch(True)
    assert padding(bucketed) < 0.1 * padding(plain)
    rows = np.concatenate([real_rows(bucketed), real_rows(epoch(True, rank=1))])
    assert np.array_equal(np.sort(rows), np.arange(len(rows)))


def test_loader_arguments_are_checked_together(nsp):
    with pytest.raises(ConfigError, match=r"batch_size: must be an integer >= 1.*rank: must be in \[0, world_size=2\)"):
        make(nsp, batch_size=0, rank=2, world_size=2)


def test_batch_feeds_hf_bert_for_pretraining(nsp):
    transformers = pytest.importorskip("transformers")
    loader = make(nsp, batch_size=4)
    batch = next(iter(loader))
    config = transformers.BertConfig(vocab_size=loader.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=loader.max_seq_length)
    model = transformers.BertForPreTraining(config)
    out = model(**hf_inputs(batch))
    assert torch.isfinite(out.loss)
