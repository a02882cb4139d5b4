"""Dynamic masking in the collator, measured on real shards: rates, 80/10/10, whole words and
spans, specials never touched, and masks keyed by (seed, epoch, row) alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlm_data.config.preprocess import MaskingConfig
from trainer.loading.loader import ShardLoader

from test_loader_support import iter_epoch, open_loader, read_rows, real_rows, take


def make(path, **kw) -> ShardLoader:
    kw.setdefault("batch_size", 32)
    kw.setdefault("seed", 5)
    return open_loader([path], **kw)


def masked_and_clean(path, masking: MaskingConfig, n: int = 15) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``n`` masked batches stacked, and the clean ids of the same rows (same seed, same plan)."""
    masked = take(iter(make(path, masking=masking, pad_to_max_length=True)), n)
    clean = take(iter(make(path, masking=None, pad_to_max_length=True)), n)
    stacked = {k: torch.cat([b[k] for b in masked]) for k in masked[0]}
    return stacked, torch.cat([b["input_ids"] for b in clean])


def specials(loader_path) -> torch.Tensor:
    return torch.tensor(sorted({v for v in make(loader_path).special_tokens.values() if v is not None}))


@pytest.mark.parametrize(("config", "rate", "mask", "keep"), [
    (MaskingConfig(), 0.15, 0.8, 0.1),
    (MaskingConfig(probability=0.3, mask_token_fraction=0.5, random_token_fraction=0.5), 0.3, 0.5, 0.0),
])
def test_rate_and_replacement_split(fullsent, config, rate, mask, keep):
    batch, clean = masked_and_clean(fullsent, config)
    chosen = batch["labels"] != -100
    maskable = batch["attention_mask"].bool() & ~torch.isin(clean, specials(fullsent))
    assert not (chosen & ~maskable).any()  # never a special token, never padding
    assert torch.equal(batch["labels"][chosen], clean[chosen])
    assert torch.equal(batch["input_ids"][~chosen], clean[~chosen])
    assert abs(chosen.sum() / maskable.sum() - rate) < 0.01
    mask_id = make(fullsent).special_tokens["mask"]
    became_mask = (batch["input_ids"][chosen] == mask_id).float().mean()
    unchanged = (batch["input_ids"][chosen] == clean[chosen]).float().mean()
    assert abs(became_mask - mask) < 0.03
    assert abs(unchanged - keep) < 0.03


def word_ids(rows, batch) -> torch.Tensor:
    """Word number of every token of the batch's rows (from the stored word_start)."""
    ws = rows.column("word_start").to_pylist()
    out = torch.full(batch["input_ids"].shape, -1)
    for i, r in enumerate(batch["row_id"].tolist()):
        out[i, :len(ws[r])] = torch.tensor(np.cumsum(ws[r]))
    return out


@pytest.mark.parametrize("config", [MaskingConfig(whole_word=True), MaskingConfig(span=True)])
def test_whole_words_are_masked_together(fullsent, config):
    batch, clean = masked_and_clean(fullsent, config, n=8)
    words = word_ids(read_rows(fullsent), batch)
    chosen = batch["labels"] != -100
    maskable = batch["attention_mask"].bool() & ~torch.isin(clean, specials(fullsent))
    for i in range(len(words)):
        for w in words[i][chosen[i]].unique().tolist():
            tokens = (words[i] == w) & maskable[i]
            assert chosen[i][tokens].all(), f"row {i}: word {w} only partly masked"
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.02


def test_spans_are_longer_than_words(fullsent):
    def mean_run(config):
        chosen = (masked_and_clean(fullsent, config, n=8)[0]["labels"] != -100).int()
        starts = (chosen[:, 1:] > chosen[:, :-1]).sum() + chosen[:, 0].sum()
        return chosen.sum() / starts

    assert mean_run(MaskingConfig(span=True)) > 1.5 * mean_run(MaskingConfig(whole_word=True))


def test_mask_depends_on_seed_epoch_and_row_only(fullsent):
    def by_row(loader, epochs=1):
        out = {}
        for epoch in range(epochs):
            for b in iter_epoch(loader):
                for i in np.nonzero(b["sample_mask"].numpy())[0]:
                    n = int(b["attention_mask"][i].sum())
                    out[(epoch, int(b["row_id"][i]))] = (b["input_ids"][i, :n].tolist(), b["labels"][i, :n].tolist())
        return out

    a = by_row(make(fullsent, batch_size=8))
    b = by_row(make(fullsent, batch_size=5, num_workers=1, shuffle_window_shards=1))
    assert a.keys() == b.keys() and a == b
    two = by_row(make(fullsent, batch_size=8), epochs=2)
    assert sum(two[(0, r)] != two[(1, r)] for (_, r) in a) > 0.9 * len(a)  # epoch keys change masks
    other_seed = by_row(make(fullsent, batch_size=8, seed=6))
    assert sum(other_seed[k] != a[k] for k in a) > 0.9 * len(a)


def test_static_epoch_is_exact_with_padding_rows(static):
    batches = [list(iter_epoch(make(static, batch_size=7, world_size=3, rank=r))) for r in range(3)]
    rows = np.concatenate([real_rows(b) for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(len(read_rows(static))))
    assert all((b["labels"][~b["sample_mask"]] == -100).all() for rank in batches for b in rank)


def test_static_masks_come_from_the_shards(static):
    rows = read_rows(static)
    ids, positions, originals = (rows.column(c).to_pylist() for c in ("input_ids", "masked_positions", "masked_labels"))
    # The configured masking is ignored: the dataset carries its masks.
    batches = take(iter(make(static, batch_size=8, masking=MaskingConfig(probability=0.5))), 5)
    assert all(torch.equal(x["labels"], y["labels"])
               for x, y in zip(batches, take(iter(make(static, batch_size=8)), 5)))
    for b in batches:
        for i, r in enumerate(b["row_id"].tolist()):
            n = len(ids[r])
            assert b["input_ids"][i, :n].tolist() == ids[r]
            expected = torch.full((b["labels"].shape[1],), -100)
            expected[positions[r]] = torch.tensor(originals[r])
            assert torch.equal(b["labels"][i], expected)
