"""Building the Beam graph costs the same for 2 input files as for 2,000.

Files travel through the graph as the elements of one ``Create``, never as one read transform
each, so the graph (and with it construction time and the pickled job a remote runner
receives) has the same transforms whatever the file count. Timing belongs in the benchmark
(``bench/scale.py``); here the graph itself is compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from mlm_data.config.loading import load
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.errors import DatasetError
from pipelines.preprocess import run

from conftest import TOKENIZER

GRAPHS: list[dict[str, int]] = []


class GraphOnlyRunner(PipelineRunner):
    """Records the size of the graph it is handed and runs nothing."""

    def run_pipeline(self, pipeline, options):
        proto = pipeline.to_runner_api()
        GRAPHS.append({"transforms": len(proto.components.transforms),
                       "pcollections": len(proto.components.pcollections),
                       "bytes": proto.ByteSize()})
        return PipelineResult(PipelineState.DONE)


def _graph(tmp_path: Path, n_files: int) -> dict[str, int]:
    corpus = tmp_path / f"corpus-{n_files}"
    corpus.mkdir()
    for i in range(n_files):
        (corpus / f"doc-{i:05d}.txt").write_text(f"Document number {i} has a sentence. And another one.\n")
    cfg = load(PreprocessConfig, settings={"input.paths": [str(corpus)], "output.path": str(tmp_path / f"out-{n_files}"),
                                              "tokenizer.path": str(TOKENIZER), "output.num_buckets": 2})
    # Nothing runs, so there is no manifest to load at the end.
    with pytest.raises(DatasetError):
        run(cfg, beam_args=["--runner", f"{__name__}.GraphOnlyRunner"], echo=lambda _m: None)
    return GRAPHS.pop()


def test_graph_does_not_grow_with_the_number_of_input_files(tmp_path):
    few, many = _graph(tmp_path, 2), _graph(tmp_path, 2000)
    assert many["transforms"] == few["transforms"] and many["pcollections"] == few["pcollections"]
    # The file list itself rides in the graph, ~100 bytes a file; nothing else grows.
    assert many["bytes"] - few["bytes"] < 2000 * 400
