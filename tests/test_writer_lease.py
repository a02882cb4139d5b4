"""One writer per output: a second ``preprocess`` into the same output is refused in one line,
a stale lease is taken over with a notice, a live one is renewed, and a run that lost its
lease neither publishes nor reports success. Locally, on S3 (moto) and on GCS
(fake-gcs-server, which accepts but does not enforce preconditions: there the test checks
that the requests carry them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlm_data import storage
from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError, OutputBusyError
from mlm_data.lifetime import ProcessId
from mlm_data.storage import conditional
from mlm_data.storage.lease import LEASE_FORMAT, LEASE_NAME, LeaseTicket, WriterLease, stale_seconds
from pipelines.cli import main

from conftest import DEMO_CORPUS, REPO, TOKENIZER

if TYPE_CHECKING:
    from servers import FakeGCS, ObjectStore

pytest_plugins = ["servers"]

KW = ("--set", "output.num_buckets=2")
STRANGER = {"pid": 4242, "started": "1", "machine": "0badc0de", "host": "build-7"}


def lease_body(*, renewed_ago: float, stale_after: float = 300, owner: dict | None = None) -> bytes:
    now = time.time()
    return json.dumps({"format": LEASE_FORMAT, "token": "f" * 32, "command": "mlm-data preprocess",
                       "owner": owner or STRANGER, "acquired_at": now - renewed_ago - 60,
                       "renewed_at": now - renewed_ago, "stale_after": stale_after}).encode()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def preprocess_argv(corpus: Path | str, output: str, *extra: str) -> list[str]:
    return ["preprocess", "--input", str(corpus), "--output", output, "--tokenizer", str(TOKENIZER), *KW, *extra]


@pytest.fixture(params=["local", "s3", "gs"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ObjectStore | None]:
    """An output location (URL) and, for object stores, the store."""
    if request.param == "local":
        return str(tmp_path / "ds"), None
    store = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return store.url("ds"), store


def put(url: str, data: bytes) -> None:
    assert conditional.create(url, data)


# --------------------------------------------------------------------------------------------
# Two runs, one output


def test_two_local_runs_started_together_one_writes_the_other_is_refused_in_one_line(tmp_path):
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(buckets: int) -> subprocess.Popen:
        argv = [sys.executable, "-m", "pipelines.cli", *preprocess_argv(DEMO_CORPUS, str(out), "--overwrite")]
        argv[argv.index("output.num_buckets=2")] = f"output.num_buckets={buckets}"
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=(tmp_path / f"{buckets}.out").open("wb"),
                                stderr=(tmp_path / f"{buckets}.err").open("wb"))

    runs = {buckets: start(buckets) for buckets in (2, 3)}
    codes = {buckets: proc.wait(timeout=600) for buckets, proc in runs.items()}
    assert sorted(codes.values()) == [0, 2], {b: (tmp_path / f"{b}.err").read_text() for b in runs}
    winner = next(b for b, code in codes.items() if code == 0)
    loser = next(b for b, code in codes.items() if code == 2)

    [line] = (tmp_path / f"{loser}.err").read_text().strip().splitlines()
    assert re.fullmatch(rf"mlm-data error: {re.escape(str(out))}: another run is writing here \(mlm-data "
                        rf"preprocess, pid {runs[winner].pid} on \S+, started .* UTC, lease renewed \d+s ago\); "
                        r"wait for it to finish or choose another output\. A lease not renewed for 300s is taken "
                        r"over \(\.writer-lease\.json, MLM_DATA_LEASE_STALE_SECONDS\)", line)
    assert (tmp_path / f"{loser}.out").read_text() == ""   # no summary of someone else's data
    assert "rows" in (tmp_path / f"{winner}.out").read_text()
    manifest = Manifest.load(str(out))
    assert manifest.data["config"]["output"]["num_buckets"] == winner   # the winner's dataset, intact
    assert not (out / LEASE_NAME).exists()


def test_a_live_lease_refuses_a_second_writer_in_one_line(where, small_corpus, capsys):
    url, store = where
    put(f"{url}/{LEASE_NAME}", lease_body(renewed_ago=5))
    code, out, err = run_cli(capsys, *preprocess_argv(small_corpus, url))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: {url}: another run is writing here (mlm-data preprocess, pid 4242 on "
                           "build-7, started ")
    assert re.search(r"lease renewed \d+s ago\)", line) and out == ""
    lease = conditional.read(f"{url}/{LEASE_NAME}")
    assert lease is not None and json.loads(lease.data)["owner"] == STRANGER   # untouched
    if store is not None:
        assert store.keys("ds") == [LEASE_NAME]   # nothing else was written


def test_a_stale_lease_is_taken_over_with_a_notice(where, small_corpus, capsys):
    url, store = where
    put(f"{url}/{LEASE_NAME}", lease_body(renewed_ago=400))
    code, out, err = run_cli(capsys, *preprocess_argv(small_corpus, url))
    assert code == 0, err
    [notice] = [line for line in err.splitlines() if "writer lease" in line]
    assert re.fullmatch(rf"{re.escape(url)}: taking over the writer lease of mlm-data preprocess, pid 4242 on "
                        r"build-7: not renewed for 4\d\ds \(stale after 300s\)", notice)
    assert conditional.read(f"{url}/{LEASE_NAME}") is None   # released at the end
    assert Manifest.load(url).shards


def test_the_lease_of_a_dead_local_process_is_taken_over_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = ProcessId.of(proc.pid)
    proc.kill()
    proc.wait()
    put(str(tmp_path / LEASE_NAME), lease_body(renewed_ago=1, owner=dead.__dict__))
    notices: list[str] = []
    with WriterLease(str(tmp_path), command="test", echo=notices.append):
        pass
    assert notices == [f"{tmp_path}: taking over the writer lease of mlm-data preprocess, pid {dead.pid} on "
                       f"{dead.host}: that process no longer exists (pid {dead.pid} on {dead.host})"]


# --------------------------------------------------------------------------------------------
# The lease itself


@pytest.mark.parametrize("scheme", ["local", "s3"])
def test_of_many_simultaneous_creates_exactly_one_wins(scheme, request, tmp_path):
    url = (str(tmp_path / "race") if scheme == "local" else request.getfixturevalue("s3").url("race")) + "/lease"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        results.append(conditional.create(url, f"racer {i}".encode()))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    winner = conditional.read(url)
    assert winner is not None and winner.data.startswith(b"racer ")


def test_gcs_lease_requests_carry_their_preconditions(gcs: ObjectStore, gcs_server: FakeGCS):
    # fake-gcs-server accepts ifGenerationMatch but does not enforce it; real GCS does.
    with WriterLease(gcs.url("ds"), command="test", stale_after=0.5) as lease:
        time.sleep(0.3)
        lease.verify("checking")
    time.sleep(0.3)   # the server logs asynchronously
    log = b"".join(gcs_server.log_tail).decode(errors="replace")
    assert re.search(r"POST /upload/storage/v1/b/mlm-test/o\?uploadType=multipart&ifGenerationMatch=0 ", log)
    assert re.search(r"POST /upload/storage/v1/b/mlm-test/o\?[^ ]*ifGenerationMatch=[1-9]\d* ", log)   # renewal
    assert re.search(r"DELETE /storage/v1/b/mlm-test/o/ds%2F\.writer-lease\.json\?ifGenerationMatch=[1-9]", log)
    assert gcs.keys("ds") == []


def test_a_live_lease_is_renewed_and_never_looks_stale(tmp_path):
    root = str(tmp_path)
    with WriterLease(root, command="first", stale_after=0.6):
        first = json.loads((tmp_path / LEASE_NAME).read_bytes())
        time.sleep(1.5)   # well past the stale time: only renewals keep it fresh
        renewed = json.loads((tmp_path / LEASE_NAME).read_bytes())
        assert renewed["renewed_at"] > first["renewed_at"] + 0.5
        with pytest.raises(OutputBusyError, match=r"another run is writing here \(first, pid "):
            WriterLease(root, command="second", stale_after=0.6).acquire()
    assert not (tmp_path / LEASE_NAME).exists()
    with WriterLease(root, command="third"):
        assert json.loads((tmp_path / LEASE_NAME).read_bytes())["command"] == "third"


def test_a_store_without_conditional_writes_is_named_in_one_line():
    notices: list[str] = []
    with WriterLease("memory://lease-test/ds", command="test", echo=notices.append):
        pass
    assert notices == ["memory://lease-test/ds: this store cannot create objects conditionally, so the writer "
                       "lease is checked, then written: two runs started within moments of each other could "
                       "both proceed"]


def test_stale_time_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLM_DATA_LEASE_STALE_SECONDS", "42")
    assert stale_seconds() == 42.0
    monkeypatch.setenv("MLM_DATA_LEASE_STALE_SECONDS", "soon")
    with pytest.raises(ConfigError, match="MLM_DATA_LEASE_STALE_SECONDS='soon' must be a number of seconds"):
        stale_seconds()


# --------------------------------------------------------------------------------------------
# Never claim what is not yours


def test_a_run_that_lost_its_lease_neither_publishes_nor_reports_success(tmp_path, small_corpus, monkeypatch,
                                                                         capsys):
    out = tmp_path / "ds"
    real_publish_file = storage.publish_file

    def publish_after_a_takeover(local_path, url):
        # Another run decided this one was dead and took the output over.
        (out / LEASE_NAME).write_bytes(lease_body(renewed_ago=0))
        real_publish_file(local_path, url)

    monkeypatch.setattr(storage, "publish_file", publish_after_a_takeover)
    code, stdout, err = run_cli(capsys, *preprocess_argv(small_corpus, str(out)))
    assert code == 2 and stdout == "" and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("mlm-data error:")]
    assert line.startswith(f"mlm-data error: {out}: not publishing the manifest: this run no longer holds the "
                           "output's writer lease (mlm-data preprocess, pid 4242 on build-7 holds it now); it "
                           "stalled for longer than the stale time and another run took over. Run again once the "
                           "output is free")
    assert not (out / "manifest.json").exists()
    assert json.loads((out / LEASE_NAME).read_bytes())["owner"] == STRANGER   # the new holder's, untouched


def test_lease_tickets_travel_to_workers():
    import pickle

    ticket = LeaseTicket("s3://b/ds/.writer-lease.json", "abc")
    assert pickle.loads(pickle.dumps(ticket)) == ticket
