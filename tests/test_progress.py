"""Progress of a long run: the line itself, and runs that really print it."""

from __future__ import annotations

import re

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from mlm_data.config.loading import load
from mlm_data.config.preprocess import PreprocessConfig
from mlm_data.progress import ProgressCounts, RunSize, format_progress, fraction_done
from pipelines.cli import main
from pipelines.preprocess import resolve_tokenizer, run
from pipelines.progress import ProgressSettings, ProgressTally, metrics_counts

from conftest import TOKENIZER

LINE = re.compile(r"^\d+:\d\d:\d\d read (\d+)/(\d+) files, ([\d,]+) docs, [\d.,]+/[\d.,]+ MB; tokens [\d.,]+ M; "
                  r"wrote (\d+)/(\d+) buckets, ([\d,]+) rows \((\d+) shards\); (ETA [-\d:]+|done)$")


def test_fraction_grows_through_both_stages_and_ends_at_one():
    size = RunSize(files=4, text_bytes=1000, buckets=3)
    steps = [ProgressCounts(),
             ProgressCounts(files_read=1, text_bytes_read=400),
             ProgressCounts(files_read=3, text_bytes_read=1100, tokens=250),  # the estimate was low
             ProgressCounts(files_read=4, text_bytes_read=1100, tokens=300),
             ProgressCounts(files_read=4, text_bytes_read=1100, tokens=300, tokens_placed=200, buckets_written=2),
             ProgressCounts(files_read=4, text_bytes_read=1100, tokens=300, tokens_placed=300, buckets_written=3)]
    fractions = [fraction_done(c, size) for c in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions[2] < 0.85  # reading is not over until every file is read


def test_line_says_what_is_done_and_what_is_left():
    size = RunSize(files=16, text_bytes=2_000_000_000, buckets=20)
    half = ProgressCounts(files_read=16, documents_read=512_000, text_bytes_read=2_010_000_000, tokens=500_000_000,
                          tokens_placed=250_000_000, rows_written=2_000_000, shards_written=12, buckets_written=9)
    line = format_progress(half, size, elapsed=3600)
    assert LINE.match(line), line
    assert "read 16/16 files, 512,000 docs, 2,010.0/2,000.0 MB; tokens 500.0 M" in line
    assert line.endswith("wrote 9/20 buckets, 2,000,000 rows (12 shards); ETA 0:04:52")  # 92.5 % done
    assert format_progress(ProgressCounts(), size, elapsed=0).endswith("ETA --")
    assert format_progress(ProgressCounts(buckets_written=20), size, elapsed=9).endswith("; done")


def progress_run(tmp_path, corpus, *, beam_args=(), terminal=False, **fields):
    lines, written = [], []
    cfg = load(PreprocessConfig, settings={"input.paths": [str(corpus)], "output.path": str(tmp_path / "out"),
                                           "tokenizer.path": str(TOKENIZER), **fields})
    manifest = run(cfg, beam_args=list(beam_args), echo=lines.append,
                   progress=ProgressSettings(interval=0.05, terminal=terminal))
    return manifest, [ln for ln in lines if LINE.match(ln)], written


@pytest.mark.parametrize("beam_args", [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]],
                         ids=["in-process", "multi-processing"])
def test_a_run_prints_progress_and_ends_with_the_totals(tmp_path, small_corpus, beam_args):
    manifest, lines, _ = progress_run(tmp_path, small_corpus, beam_args=beam_args, **{"output.num_buckets": 2})
    assert len(lines) >= 2  # at least one while it runs, and the last one
    files, total_files, docs, buckets, total_buckets, rows, shards, eta = LINE.match(lines[-1]).groups()
    assert (files, total_files, docs) == ("3", "3", "60")
    assert (buckets, total_buckets, eta) == ("2", "2", "done")
    assert int(rows.replace(",", "")) == manifest.data["totals"]["num_rows"]
    assert int(shards) == manifest.data["totals"]["num_shards"]


def test_on_a_terminal_one_line_is_rewritten_in_place(tmp_path, small_corpus, monkeypatch):
    written: list[str] = []
    monkeypatch.setattr("pipelines.preprocess.write_stderr", written.append)
    progress_run(tmp_path, small_corpus, terminal=True)
    assert written[-1] == "\n"
    assert all(w.startswith("\r\033[K") and LINE.match(w[4:]) for w in written[:-1])


def test_remote_runners_report_through_beam_metrics():
    """What the driver polls on Dataflow: the same counts, as Beam counters of the job."""

    class Count(beam.DoFn):
        def setup(self):
            self._progress = ProgressTally(None)

        def process(self, n):
            self._progress.add(files_read=1, documents_read=n)
            yield n

    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = pipeline | beam.Create([3, 4, 5]) | beam.ParDo(Count())
    result = pipeline.run()
    result.wait_until_finish()
    assert metrics_counts(result) == ProgressCounts(files_read=3, documents_read=12)


def test_tokenizer_training_shows_its_progress(small_corpus):
    cfg = load(PreprocessConfig, settings={"input.paths": [str(small_corpus)], "tokenizer.vocab_size": 300})
    from mlm_data.reading.document_reader import list_input_files

    lines: list[str] = []
    resolve_tokenizer(cfg, list_input_files(cfg.input.paths), echo=lines.append,
                      progress=ProgressSettings(interval=0.0, terminal=False))
    sample = [ln for ln in lines if "tokenizer sample: read" in ln]
    assert len(sample) == 60 and sample[-1].split("read ")[1].startswith("60 docs")  # interval 0: every document
    assert any(ln.startswith("training a WordPiece tokenizer on 60 documents") for ln in lines)


def test_quiet_and_bad_interval(tmp_path, small_corpus, capsys):
    args = ["preprocess", "--input", str(small_corpus), "--output", str(tmp_path / "q"), "--tokenizer", str(TOKENIZER)]
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*args, "--progress-interval", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mlm-data error: --progress-interval: must be a positive number of seconds, found 0.0")


def test_the_remote_runner_path_end_to_end(tmp_path, small_corpus, monkeypatch):
    """As on Dataflow: payloads travel through the runner's shuffle as bytes (the per-bucket
    stage keeps them in a temporary folder while it reads them window by window) and progress
    comes from the job's metrics. The dataset is the one the local path writes."""
    import pipelines.preprocess
    from mlm_data.dataset.manifest import Manifest

    local, _, _ = progress_run(tmp_path / "local", small_corpus, **{"output.num_buckets": 2,
                                                                    "output.bucket_memory_mb": 1})
    monkeypatch.setattr(pipelines.preprocess, "runs_on_this_machine", lambda options: False)
    remote, lines, _ = progress_run(tmp_path / "remote", small_corpus, **{"output.num_buckets": 2,
                                                                          "output.bucket_memory_mb": 1})
    assert remote.data == local.data == Manifest.load(str(tmp_path / "local" / "out")).data
    for entry in local.shards:
        assert (tmp_path / "remote" / "out" / entry.path).read_bytes() == (tmp_path / "local" / "out" / entry.path).read_bytes()
    files, _, docs, buckets, _, rows, _, eta = LINE.match(lines[-1]).groups()
    assert (files, docs, buckets, eta) == ("3", "60", "2", "done")
    assert int(rows.replace(",", "")) == remote.data["totals"]["num_rows"]


def test_a_runner_without_live_metrics_says_so_once():
    """Beam's DaskRunner returns from run() at once and raises on metrics(): one line says so."""
    import time

    from pipelines.progress import ProgressMonitor

    class NoMetrics:  # what DaskRunnerResult does in Beam 2.77
        def metrics(self):
            raise NotImplementedError("collecting metrics will come later!")

    lines: list[str] = []
    monitor = ProgressMonitor(ProgressSettings(interval=0.02, terminal=False), RunSize(files=1, text_bytes=1, buckets=1),
                              directory=None, emit=lines.append, write=lines.append)
    monitor.watch(NoMetrics())
    with monitor:
        time.sleep(0.2)
    assert len(lines) == 1 and lines[0].endswith("running; this runner reports no progress while it runs")
