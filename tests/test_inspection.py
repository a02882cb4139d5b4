"""What `inspect` reports and draws: exact length quantiles, readable manifests, plots that show
every split and end where the data does, and a masking budget described as it is computed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mlm_data.config.preprocess import MaskingConfig
from mlm_data.dataset import stats
from mlm_data.dataset.inspection import summarize
from mlm_data.dataset.manifest import Manifest, to_json
from mlm_data.dataset.plots import data_range, plot_stats
from mlm_data.masking import num_to_mask


def test_quantiles_of_integer_lengths_are_exact():
    # The trap from the field: 71.7 % of rows at exactly 128 tokens reported a p50 of 123,
    # interpolated inside the last bin of a 16-bin histogram.
    lengths = np.concatenate([np.full(717, 128), np.arange(1, 284) % 127 + 1])
    hist = stats.histogram(lengths, stats.integer_edges(128))
    assert stats.histogram_quantile(hist, 0.5) == 128.0
    assert stats.histogram_quantile(hist, 0.1) == float(np.sort(lengths)[int(np.ceil(0.1 * len(lengths))) - 1])
    for q in (0.01, 0.25, 0.283, 0.5, 0.95, 1.0):
        k = int(np.ceil(q * len(lengths)))  # the smallest value with at least q of the rows at or below it
        assert stats.histogram_quantile(hist, q) == float(np.sort(lengths)[k - 1]), q


def test_inspect_reports_exact_quantiles_of_a_real_dataset(tmp_path, small_corpus, preprocess):
    manifest = preprocess(str(small_corpus), tmp_path / "ds", **{"output.num_buckets": 2})
    shards = [tmp_path / "ds" / s.path for s in manifest.shards]
    lengths = np.concatenate([pa.ipc.open_stream(str(p)).read_all().column("input_ids").combine_chunks()
                              .value_lengths().to_numpy() for p in shards])
    head = summarize(Manifest.load(str(tmp_path / "ds")), sample=False)["stats"]["train"]
    ranked = np.sort(lengths)
    assert head["sequence_length_p50"] == ranked[int(np.ceil(0.5 * len(ranked))) - 1]
    assert head["sequence_length_p95"] == ranked[int(np.ceil(0.95 * len(ranked))) - 1]


def test_the_manifest_keeps_lists_of_numbers_on_one_line():
    data = {"counts": {"documents_read": 3}, "hist": {"edges": [0, 1, 2], "counts": [4, 5]},
            "shards": [{"path": "a", "n": 1}], "empty": [], "none": {}}
    text = to_json(data)
    assert json.loads(text) == data
    assert '"edges": [0, 1, 2],' in text and '"counts": [4, 5]' in text
    assert '"shards": [\n    {\n      "path": "a",' in text


def test_plots_end_where_the_data_does_and_show_each_split_as_a_share(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    train = stats.histogram(np.array([40, 41, 64] * 3000), stats.DOC_TOKEN_EDGES)
    validation = stats.histogram(np.array([100, 300]), stats.DOC_TOKEN_EDGES)
    assert data_range([train, validation]) == (32.0, 512.0)

    drawn = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.stairs

    def stairs(self, values, edges, **kwargs):
        drawn[kwargs["label"]] = np.asarray(values)
        return original(self, values, edges, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "stairs", stairs)
    written = plot_stats({"train": {"tokens_per_document": train}, "validation": {"tokens_per_document": validation}},
                         str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in written] == ["tokens_per_document.png"]
    assert set(drawn) == {"train (9,000)", "validation (2)"}
    for shares in drawn.values():  # each split as a share of its own rows, so 2 rows show as well as 9,000
        assert shares.sum() == pytest.approx(100.0)


def test_the_masking_budget_counts_maskable_tokens_as_documented():
    # README: round(p x maskable tokens) (specials and padding excluded), at least 1, at most
    # max_predictions. A full 128-token pair row has 125 maskable tokens: 19 predictions,
    # the same as Google's round(0.15 x 128) over the whole row.
    cfg = MaskingConfig(probability=0.15, max_predictions=20)
    assert num_to_mask(np.array([125, 10, 1, 0, 400]), cfg).tolist() == [19, 2, 1, 0, 20]
    assert num_to_mask(125, cfg) == round(0.15 * 128)
