"""Datasets on object stores: S3 (moto) and GCS (fake-gcs-server), through their real protocols.

What users rely on: the pipeline reads from and writes to ``s3://`` and ``gs://`` URLs with the
same bytes as a local run; ``inspect`` and ``verify`` read datasets there; objects go straight
to their final keys; a failed run leaves no manifest and nothing that trips the next run;
transient store errors are retried (bounded, logged) and permanent ones stop at once with one
line that names the URL.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import botocore.exceptions
import google.api_core.exceptions
import pytest
import requests.exceptions
from fsspec.exceptions import FSTimeoutError
from multidict import CIMultiDict, CIMultiDictProxy
from s3fs.errors import translate_boto_error
from yarl import URL

from mlm_data import storage
from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError, StorageError
from pipelines.cli import main

from conftest import TOKENIZER

if TYPE_CHECKING:
    from servers import ObjectStore

pytest_plugins = ["servers"]

KW = {"output.num_buckets": 3, "output.validation_fraction": 0.1}


# --------------------------------------------------------------------------------------------
# Helpers


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def upload_corpus(store: ObjectStore, corpus: Path, prefix: str = "in") -> str:
    for name, data in local_files(corpus).items():
        store.put(f"{prefix}/{name}", data)
    return store.url(prefix)


def expected_keys(manifest: Manifest) -> list[str]:
    return sorted(["manifest.json", "run.json", manifest.tokenizer["path"], *(s.path for s in manifest.shards)])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def HttpError(response: dict[str, object]) -> Exception:
    """gcsfs's error type, imported late: importing gcsfs fixes its class choice for good."""
    from gcsfs.retry import HttpError

    return HttpError(response)


def client_error(code: str, status: int, operation: str = "PutObject") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": f"{code} says the server"},
         "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def raising(exc: BaseException):
    def fail() -> None:
        raise exc

    return fail


def aiohttp_response_error(status: int) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(URL("http://store/b/k"), "GET", CIMultiDictProxy(CIMultiDict()), URL("http://store/b/k"))
    return aiohttp.ClientResponseError(info, (), status=status, message="from the server")


# --------------------------------------------------------------------------------------------
# Classification and backoff, on the exception types the clients really raise


@pytest.mark.parametrize(("make", "transient"), [
    # botocore: HTTP errors by code and status, and its connection errors
    (lambda: client_error("SlowDown", 503), True),
    (lambda: client_error("InternalError", 500), True),
    (lambda: client_error("ServiceUnavailable", 503), True),
    (lambda: client_error("Throttling", 400), True),
    (lambda: client_error("RequestTimeout", 400), True),
    (lambda: client_error("AccessDenied", 403), False),
    (lambda: client_error("NoSuchBucket", 404), False),
    (lambda: client_error("NoSuchKey", 404, "GetObject"), False),
    (lambda: client_error("InvalidArgument", 400), False),
    (lambda: botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
    (lambda: botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), True),
    (lambda: botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
    (lambda: botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
    (lambda: botocore.exceptions.NoCredentialsError(), False),
    # s3fs turns ClientError into OSError subclasses and keeps it as the cause
    (lambda: translate_boto_error(client_error("SlowDown", 503)), True),
    (lambda: translate_boto_error(client_error("InternalError", 500)), True),
    (lambda: translate_boto_error(client_error("AccessDenied", 403)), False),
    (lambda: translate_boto_error(client_error("NoSuchBucket", 404)), False),
    # aiohttp, under aiobotocore and gcsfs
    (lambda: aiohttp.ServerDisconnectedError(), True),
    (lambda: aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), True),
    (lambda: aiohttp.ClientPayloadError("Response payload is not completed"), True),
    (lambda: aiohttp_response_error(503), True),
    (lambda: aiohttp_response_error(429), True),
    (lambda: aiohttp_response_error(404), False),
    (lambda: FSTimeoutError(), True),
    (lambda: asyncio.TimeoutError(), True),
    # gcsfs and google-api-core
    (lambda: HttpError({"code": 503, "message": "Backend Error"}), True),
    (lambda: HttpError({"code": 429, "message": "rateLimitExceeded"}), True),
    (lambda: HttpError({"code": 400, "message": "Bad Request"}), False),
    (lambda: OSError("Forbidden: b/mlm-test/o/x\nAccess denied."), False),
    (lambda: requests.exceptions.ProxyError(), True),  # gcsfs's 502
    (lambda: google.api_core.exceptions.ServiceUnavailable("try later"), True),
    (lambda: google.api_core.exceptions.TooManyRequests("slow down"), True),
    (lambda: google.api_core.exceptions.Forbidden("no"), False),
    (lambda: google.api_core.exceptions.NotFound("no"), False),
    # the standard library, and our own errors
    (lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    (lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"), True),
    (lambda: TimeoutError("timed out"), True),
    (lambda: FileNotFoundError(errno.ENOENT, "missing", "s3://b/k"), False),
    (lambda: PermissionError(errno.EACCES, "denied"), False),
    (lambda: ValueError("not an I/O problem"), False),
    (lambda: StorageError("s3://b/k: bucket 'b' does not exist"), False),
])
def test_is_transient_on_real_client_errors(make, transient):
    assert storage.is_transient(make()) is transient


def test_access_denied_is_recognised_from_every_client():
    assert storage.is_access_denied(translate_boto_error(client_error("AccessDenied", 403)))
    assert storage.is_access_denied(OSError("Forbidden: b/mlm-test/o/x\nAccess denied."))
    assert storage.is_access_denied(HttpError({"code": 403, "message": "Forbidden"}))
    assert not storage.is_access_denied(translate_boto_error(client_error("SlowDown", 503)))


def test_retry_backs_off_exponentially_with_jitter_and_is_bounded(caplog):
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return "done"

    assert storage.retry(flaky, what="reading s3://b/k", attempts=5, base_delay=1.0, max_delay=3.0,
                         sleep=sleeps.append, jitter=lambda: 0.5) == "done"
    assert sleeps == [1.0, 2.0, 3.0]   # doubling, capped at max_delay; jitter 0.5 → factor 1.0
    assert len(calls) == 4
    assert [r.levelname for r in caplog.records].count("WARNING") == 3
    assert "reading s3://b/k: transient error (ConnectionResetError" in caplog.text
    assert "retry 1/4" in caplog.text

    sleeps.clear()
    with pytest.raises(StorageError, match=r"reading s3://b/k: still failing after 3 attempt\(s\)") as info:
        storage.retry(raising(TimeoutError("timed out")), what="reading s3://b/k", attempts=3, base_delay=0.5,
                      sleep=sleeps.append)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] < 0.75 and 0.5 <= sleeps[1] < 1.5   # jitter: a factor in [0.5, 1.5)


def test_retry_does_not_retry_permanent_errors():
    calls = []

    def denied() -> None:
        calls.append(1)
        raise translate_boto_error(client_error("AccessDenied", 403))

    with pytest.raises(PermissionError):
        storage.retry(denied, what="writing s3://b/k", sleep=lambda _: None)
    assert len(calls) == 1


def test_retry_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLM_DATA_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("MLM_DATA_RETRY_BASE_DELAY", "0.25")
    monkeypatch.setenv("MLM_DATA_RETRY_MAX_DELAY", "7")
    assert storage.RetryPolicy.from_env() == storage.RetryPolicy(attempts=2, base_delay=0.25, max_delay=7.0)
    sleeps: list[float] = []
    with pytest.raises(StorageError, match="after 2 attempt"):
        storage.retry(raising(aiohttp.ServerDisconnectedError()), what="x", sleep=sleeps.append,
                      jitter=lambda: 0.0)
    assert sleeps == [0.125]
    monkeypatch.setenv("MLM_DATA_RETRY_ATTEMPTS", "many")
    with pytest.raises(ConfigError, match="MLM_DATA_RETRY_ATTEMPTS='many'"):
        storage.RetryPolicy.from_env()
    monkeypatch.setenv("MLM_DATA_RETRY_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="MLM_DATA_RETRY_ATTEMPTS=0 .must be at least 1"):
        storage.RetryPolicy.from_env()


# --------------------------------------------------------------------------------------------
# The pipeline and the CLI against both stores


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue("s3" if request.param == "s3" else "gcs")


@pytest.fixture(scope="module")
def reference(small_corpus: Path, preprocess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, dict[str, bytes]]:
    """The small corpus preprocessed from and to local disk: what every store must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    manifest = preprocess(str(small_corpus), root, **KW)
    return manifest, local_files(root)


def shards_only(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.endswith(".arrow")}


def test_pipeline_reads_and_writes_object_store_urls_byte_identically(store, tmp_path, small_corpus, preprocess,
                                                                      reference, capsys):
    ref_manifest, ref_files = reference
    # Local inputs, dataset on the store: every object, the manifest included, is identical
    # to the local run (the manifest records what shaped the data, not where it went).
    manifest = preprocess(str(small_corpus), store.url("ds"), **KW)
    assert store.keys("ds") == sorted(ref_files) == expected_keys(manifest)
    assert store.objects("ds") == ref_files
    assert len(shards_only(ref_files)) >= 4
    # Inputs on the store, dataset local: the same shards and manifest (inputs are recorded
    # relative to the pattern's fixed prefix; only run.json says where they were).
    inputs = upload_corpus(store, small_corpus)
    from_store = preprocess(inputs, tmp_path / "local", **KW)
    assert {k: v for k, v in local_files(tmp_path / "local").items() if k != "run.json"} == \
        {k: v for k, v in ref_files.items() if k != "run.json"}
    assert from_store.data == ref_manifest.data
    local = local_files(tmp_path / "local")
    assert json.loads(local["run.json"]) == {"manifest_sha256": hashlib.sha256(local["manifest.json"]).hexdigest(),
                                             "inputs": [inputs]}

    code, out, err = run_cli(capsys, "verify", store.url("ds"), "--quiet")
    assert code == 0, err
    assert out.startswith(f"OK {len(manifest.shards)} shards")
    code, out, err = run_cli(capsys, "inspect", store.url("ds"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dataset"] == store.url("ds")
    assert summary["totals"] == manifest.data["totals"]
    assert summary["sample"]["shard"] == manifest.shards[0].path and summary["sample"]["segment_a"]

    # One flipped byte in one object: verify fails, naming the shard.
    victim = manifest.shards_for("train")[1].path
    data = bytearray(store.get(f"ds/{victim}"))
    data[len(data) // 2] ^= 0x01
    store.put(f"ds/{victim}", bytes(data))
    code, out, err = run_cli(capsys, "verify", store.url("ds"), "--quiet")
    assert code == 1
    assert f"FAIL {store.url('ds')}/{victim}: shard checksum mismatch" in out
    assert out.count("FAIL") == 1


@pytest.mark.parametrize("scheme", [
    "gs",
    # In-process runs already reach S3 through the environment alone; ~12 s of worker start-up.
    pytest.param("s3", marks=pytest.mark.slow),
])
def test_worker_processes_reach_the_store_through_the_environment(scheme, request, small_corpus, preprocess,
                                                                   reference):
    # Worker processes configure their clients from the inherited environment alone
    # (STORAGE_EMULATOR_HOST, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, FSSPEC_GS_TOKEN; AWS_*), without
    # the in-process fsspec config the fixtures also set.
    store = request.getfixturevalue("s3" if scheme == "s3" else "gcs")
    manifest = preprocess(str(small_corpus), store.url("mp"), beam_args=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"], **KW)
    assert store.objects("mp") == reference[1]
    assert manifest.data == reference[0].data


def test_a_failed_overwrite_leaves_the_old_dataset_intact(s3, small_corpus, preprocess, reference, monkeypatch,
                                                          capsys):
    out = s3.url("ds")
    for name, data in reference[1].items():   # an existing dataset, to be overwritten
        s3.put(f"ds/{name}", data)
    real_publish = storage.publish_file
    written: list[str] = []

    def publish_then_fail(local_path, url):
        real_publish(local_path, url)
        written.append(url.split("/ds/", 1)[1])
        if "/train/shard-00003-000-" in url:
            assert s3.keys("ds") == sorted({*reference[1], *written, ".writer-lease.json", reference[0].tokenizer["path"]})
            code, out_, err = run_cli(capsys, "verify", out, "--quiet")   # the old dataset, mid-run
            assert code == 0, out_ + err
            raise RuntimeError("worker lost after writing its shard")

    monkeypatch.setattr(storage, "publish_file", publish_then_fail)
    with pytest.raises(Exception, match="worker lost after writing its shard"):
        preprocess(str(small_corpus), out, **{**KW, "output.num_buckets": 5, "output.overwrite": True})
    assert "train/shard-00003-000" in " ".join(written)   # the failed run got that far
    # What the failed run wrote is gone; the old dataset is all there is, byte for byte.
    assert s3.objects("ds") == reference[1]
    assert Manifest.load(out).data == reference[0].data

    monkeypatch.setattr(storage, "publish_file", real_publish)
    manifest = preprocess(str(small_corpus), out, **{**KW, "output.num_buckets": 2, "output.overwrite": True})
    assert s3.keys("ds") == expected_keys(manifest)   # the old dataset's files removed once replaced
    assert Manifest.load(out).data == manifest.data


def test_shards_go_straight_to_final_keys_and_faults_lose_nothing(s3_proxy, s3, small_corpus, preprocess,
                                                                   reference, capsys, caplog):
    # Dropped connections, 500s that neither botocore (AWS_MAX_ATTEMPTS=1) nor s3fs retries,
    # and a burst of 503 SlowDown longer than s3fs's own five tries: only our retries can
    # get the run through.
    s3_proxy.inject("disconnect", first=2)
    s3_proxy.inject("500", every=5)
    s3_proxy.inject("503", first=7, methods={"PUT"})
    with caplog.at_level(logging.WARNING, logger="mlm_data.storage.retries"):
        manifest = preprocess(str(small_corpus), s3.url("ds"), **KW)
    assert s3_proxy.injected["disconnect"] == 2 and s3_proxy.injected["503"] == 7
    assert s3_proxy.injected["500"] >= 2
    assert re.search(r"writing s3://mlm-test/ds/\S+: transient error .*retry 1/5", caplog.text)

    # Nothing lost, nothing duplicated: the same objects as a clean local run, byte for byte.
    assert s3.objects("ds") == reference[1]
    assert manifest.data == reference[0].data
    # Every write went to a final key: no temporary objects, no copies (an S3 "rename"); the
    # writer lease comes and goes.
    final = {f"/mlm-test/ds/{k}" for k in expected_keys(manifest)}
    writes = [w for w in s3_proxy.writes() if w.path != "/mlm-test/ds/.writer-lease.json"]
    assert writes and {w.path for w in writes} <= final
    assert not [w for w in writes if w.copy_source or w.method == "DELETE"]

    # The reader side (verify fetches shards exactly as the trainer does) rides out faults too.
    s3_proxy.clear()
    s3_proxy.inject("disconnect", every=3)
    s3_proxy.inject("500", first=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlm_data.storage.retries"):
        code, out, err = run_cli(capsys, "verify", s3.url("ds"), "--quiet")
    assert code == 0, err + out
    assert out.startswith(f"OK {len(manifest.shards)} shards")
    assert "reading s3://mlm-test/ds/" in caplog.text and "transient error" in caplog.text


def test_a_store_that_keeps_failing_gives_up_quickly_naming_the_url(s3_proxy, s3, capsys):
    s3_proxy.inject("500", always=True)
    started = time.monotonic()
    code, out, err = run_cli(capsys, "verify", s3.url("ds"), "--quiet")
    assert time.monotonic() - started < 10
    assert code == 2
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: reading {s3.url('ds')}/manifest.json: still failing after 6 attempt")
    assert "[500" in line
    assert len(s3_proxy.requests) == 6   # bounded: MLM_DATA_RETRY_ATTEMPTS, one request each


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_missing_bucket_fails_fast_with_one_line(scheme, request, small_corpus, capsys):
    request.getfixturevalue("s3" if scheme == "s3" else "gcs")
    url = f"{scheme}://no-such-bucket/ds"
    code, out, err = run_cli(capsys, "verify", url)
    assert code == 2
    assert err.strip().splitlines() == [
        f"mlm-data error: {url}/manifest.json: bucket 'no-such-bucket' does not exist (while reading); create it "
        "or correct the URL (and check AWS_ENDPOINT_URL / STORAGE_EMULATOR_HOST if you use one)"]
    code, out, err = run_cli(capsys, "preprocess", "--input", str(small_corpus), "--output", url,
                             "--tokenizer", str(TOKENIZER))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: {url}/.writer-lease.json: bucket 'no-such-bucket' does not exist "
                           "(while creating)")


def test_access_denied_fails_fast_with_one_line(s3_proxy, s3, small_corpus, capsys):
    s3_proxy.inject("403", always=True)
    code, out, err = run_cli(capsys, "verify", s3.url("ds"))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: {s3.url('ds')}/manifest.json: access denied while reading")
    assert len(s3_proxy.requests) == 1   # a refusal is not retried
    code, out, err = run_cli(capsys, "preprocess", "--input", str(small_corpus), "--output", s3.url("ds"),
                             "--tokenizer", str(TOKENIZER))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: {s3.url('ds')}/manifest.json: access denied while checking")
