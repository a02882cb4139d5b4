"""What a user sees on stderr, in a real process: one line per error, also when the error is
raised inside a DoFn on an SDK worker process, and one line on Ctrl-C."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_CORPUS, REPO, TOKENIZER, demo_documents, write_corpus

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
INTERRUPTED = "interrupted; nothing was published: no manifest was written"


def mlm_data(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def other_lines(stderr: str) -> list[str]:
    """stderr without the line that says what a run reads (the SDK workers' start-up warning is
    gone too: ``console.DropHarmlessWorkerWarnings``)."""
    return [line for line in stderr.splitlines() if not line.startswith(("1 input files", "2 input files"))]


def test_a_mistyped_flag_is_one_line_in_a_real_process(tmp_path):
    res = mlm_data("preprocess", "--input", "a.txt", "--output", "out", "--toknizer", "tok.json", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "mlm-data error: unknown flag --toknizer; did you mean --tokenizer? (see `mlm-data preprocess --help`)"]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_corpus(tmp_path_factory.mktemp("bad"), [demo_documents(5)], names=["good.txt"])
    (root / "binary.txt").write_bytes(b"\x00\x01\x02 not text \xff\xfe")
    pq.write_table(pa.table({"body": ["One document. With two sentences."] * 3}), root / "body.parquet")
    (root / "body.jsonl").write_text("".join(json.dumps({"body": f"Document {i}. Two sentences."}) + "\n"
                                             for i in range(3)))
    return root


#: (inputs and flags, the start of the one error line)
DOFN_ERRORS = {
    "binary file": (["good.txt", "binary.txt"], "mlm-data error: {root}/binary.txt: binary content"),
    "missing parquet column": (["body.parquet"], "mlm-data error: {root}/body.parquet: no column 'text'"),
    "wrong text_field": (["body.jsonl"], "mlm-data error: body.jsonl: no training rows were produced "
                                         "(3 documents read, dropped: missing_text: 3)"),
    "no rows produced": (["good.txt", "--set", "clean.min_document_chars=100000"],
                         "mlm-data error: good.txt: no training rows were produced"),
}


@pytest.mark.parametrize("case,runner", [
    *((case, []) for case in DOFN_ERRORS),
    # on SDK worker processes: an error in the first stage and one in the last
    ("binary file", MULTI), ("wrong text_field", MULTI),
])
def test_an_error_inside_a_dofn_is_one_line(case, runner, bad_inputs, tmp_path):
    inputs, expected = DOFN_ERRORS[case]
    res = mlm_data("preprocess", "--input", *inputs, "--output", str(tmp_path / "out"), "--tokenizer",
                   str(TOKENIZER), *runner, cwd=bad_inputs)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert other_lines(res.stderr) == [res.stderr.splitlines()[-1]]
    assert res.stderr.splitlines()[-1].startswith(expected.format(root=bad_inputs))
    assert "[while running" not in res.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture(scope="module")
def two_demo_copies(tmp_path_factory) -> Path:
    """~5 MB of text: long enough a pipeline for a Ctrl-C to land in it."""
    root = tmp_path_factory.mktemp("demo")
    for name in ("a.txt.gz", "b.txt.gz"):
        shutil.copy(DEMO_CORPUS, root / name)
    assert gzip.open(root / "a.txt.gz").read(10)
    return root


@pytest.mark.parametrize("runner,as_terminal", [
    pytest.param([], True, id="in-process, Ctrl-C in a terminal"),
    pytest.param(MULTI, True, id="multi-processing, Ctrl-C in a terminal"),
    pytest.param(MULTI, False, id="multi-processing, kill -INT of the driver only"),
])
def test_ctrl_c_is_one_line_and_a_rerun_works(runner, as_terminal, two_demo_copies, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pipelines.cli", "preprocess", "--input", "a.txt.gz", "b.txt.gz", "--output",
            str(out), "--tokenizer", str(TOKENIZER), *runner]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A terminal sends Ctrl-C to the whole foreground process group, the SDK workers included.
    proc = subprocess.Popen(argv, cwd=two_demo_copies, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started = proc.stderr.readline()
    assert "train bucket(s); runner DirectRunner" in started  # the pipeline is being built and run
    time.sleep(0.5)
    if as_terminal:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (code, other_lines(rest)) == (130, [INTERRUPTED])
    assert not (out / "manifest.json").exists()
    if runner:
        return
    res = mlm_data("preprocess", "--input", "a.txt.gz", "b.txt.gz", "--output", str(out), "--tokenizer",
                   str(TOKENIZER), cwd=two_demo_copies)
    assert res.returncode == 0, res.stderr
    assert (out / "manifest.json").exists()
