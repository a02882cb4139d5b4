"""A dead object store fails a command in bounded time, with one line naming the URL.

Two kinds of dead, for ``s3://`` and ``gs://``: a port that refuses connections, and a server
that accepts them, reads the request and never answers. Timeouts and retries are set small
through the environment, as a user would (``MLM_DATA_STORE_TIMEOUT``, ``MLM_DATA_RETRY_*``),
and each command must finish within the bound the documentation gives for those settings.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import fsspec.asyn
import fsspec.config
import pytest
from servers import clear_fsspec_caches, free_port, gcs_env, s3_env, use_environment

# What the commands import on first use (Beam, pyarrow.compute: many seconds on a busy
# machine), imported here so that the time measured is the store's.
import mlm_data.dataset.inspection  # noqa: F401
import pipelines.preprocess  # noqa: F401
from mlm_data import storage
from mlm_data.errors import ConfigError
from mlm_data.storage.clients import attempt_limit, client_options, store_timeout
from mlm_data.storage.retries import RetryPolicy
from pipelines.cli import main

from conftest import TOKENIZER

TIMEOUT, ATTEMPTS, BASE_DELAY, MAX_DELAY = 1.0, 3, 0.1, 0.2
#: The documented bound for these settings: every attempt cut off after the timeout, plus the
#: backoff between attempts (at most 1.5 × each capped delay), plus time to start the clients
#: and print. A refused connection does not wait for the timeout at all.
BACKOFF = 1.5 * sum(min(MAX_DELAY, BASE_DELAY * 2 ** i) for i in range(ATTEMPTS - 1))
SLACK = 6.0


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A server that accepts connections and reads requests but never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)
            conn.setblocking(False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture(params=["s3", "gs"])
def scheme(request: pytest.FixtureRequest) -> str:
    if request.param == "gs":
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            import gcsfs  # noqa: F401  (reads the variable once, when first imported)
    return request.param


def point_at(monkeypatch: pytest.MonkeyPatch, scheme: str, port: int) -> None:
    endpoint = f"http://127.0.0.1:{port}"
    use_environment(monkeypatch, {
        **(s3_env(endpoint) if scheme == "s3" else gcs_env(endpoint)),
        "MLM_DATA_STORE_TIMEOUT": str(TIMEOUT), "MLM_DATA_RETRY_ATTEMPTS": str(ATTEMPTS),
        "MLM_DATA_RETRY_BASE_DELAY": str(BASE_DELAY), "MLM_DATA_RETRY_MAX_DELAY": str(MAX_DELAY),
    })
    if scheme == "gs":
        import importlib

        import gcsfs.core

        registry = importlib.import_module("fsspec.registry")._registry
        for protocol in ("gs", "gcs"):
            monkeypatch.setitem(registry, protocol, gcsfs.core.GCSFileSystem)
    # Build the client now (imports, service models: seconds on a busy machine, no network),
    # so that the time measured is the store's; the command reuses this instance.
    fs, _ = storage.url_to_fs(f"{scheme}://bucket/ds")
    fsspec.asyn.sync(fs.loop, fs.set_session if scheme == "s3" else fs._set_session)


def run_in_thread(argv: list[str], capsys: pytest.CaptureFixture[str], limit: float) -> tuple[int, str, float]:
    """Run the CLI; fail (without waiting for it) if it is still running after ``limit`` s."""
    result: dict[str, object] = {}

    def target() -> None:
        started = time.monotonic()
        result["code"] = main(argv)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"{' '.join(argv)} still running after {limit:.0f}s: the store's silence is not bounded")
    return int(result["code"]), capsys.readouterr().err, float(result["seconds"])  # type: ignore[arg-type]


@pytest.mark.parametrize("dead", ["silent", "refused"])
@pytest.mark.parametrize("command", ["verify", "preprocess"])
def test_a_dead_store_fails_a_command_within_the_documented_bound(scheme, dead, command, silent_port, small_corpus,
                                                                  monkeypatch, capsys):
    port = silent_port if dead == "silent" else free_port()
    point_at(monkeypatch, scheme, port)
    url = f"{scheme}://bucket/ds"
    argv = (["verify", url] if command == "verify" else
            ["preprocess", "--input", str(small_corpus), "--output", url, "--tokenizer", str(TOKENIZER)])
    # A refused connection costs the backoff alone.
    bound = (ATTEMPTS * TIMEOUT if dead == "silent" else 0) + BACKOFF + SLACK
    code, err, seconds = run_in_thread(argv, capsys, limit=bound + 30)
    clear_fsspec_caches()
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlm-data error: checking {url}/manifest.json: still failing after {ATTEMPTS} attempt(s)"
                           if command == "preprocess" else
                           f"mlm-data error: reading {url}/manifest.json: still failing after {ATTEMPTS} attempt(s)")
    assert seconds <= bound, f"{seconds:.1f}s > {bound:.1f}s: {line}"


def test_the_default_backoff_is_what_the_readme_says():
    # README (Object storage): a refused connection fails an operation after 8-23 s of backoff.
    policy = RetryPolicy()
    delays = [min(policy.max_delay, policy.base_delay * 2 ** i) for i in range(policy.attempts - 1)]
    assert (0.5 * sum(delays), 1.5 * sum(delays)) == (7.75, 23.25)


def test_every_client_gets_the_timeouts_and_user_settings_win(monkeypatch):
    monkeypatch.setenv("MLM_DATA_STORE_TIMEOUT", "7")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    assert client_options("s3") == {"config_kwargs": {"connect_timeout": 7.0, "read_timeout": 7.0,
                                                      "retries": {"total_max_attempts": 1}}}
    gs = client_options("gs")
    assert gs["requests_timeout"].sock_read == 7.0 and gs["requests_timeout"].sock_connect == 7.0
    assert len(gs["session_kwargs"]["trace_configs"]) == 1
    assert "session_kwargs" not in client_options("gs", streaming=True)
    assert client_options("file") == client_options("memory") == {}

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")   # the user's own botocore retries: kept
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 120}, "anon": True})
    assert client_options("s3") == {"config_kwargs": {"connect_timeout": 7.0, "read_timeout": 120}, "anon": True}

    # One attempt at a call: the timeout, plus 4 s per MiB moved, on clients that take it.
    assert attempt_limit(fsspec.filesystem("file")) == attempt_limit(fsspec.filesystem("memory")) == {}
    s3 = fsspec.filesystem("s3", anon=True, skip_instance_cache=True)
    assert attempt_limit(s3) == {"timeout": 7.0}
    assert attempt_limit(s3, nbytes=3 << 20) == {"timeout": 19.0}
    assert attempt_limit(s3, listing=True) == {"timeout": 28.0}


def test_the_timeout_setting_is_checked(monkeypatch):
    monkeypatch.delenv("MLM_DATA_STORE_TIMEOUT", raising=False)
    assert store_timeout() == 15.0
    monkeypatch.setenv("MLM_DATA_STORE_TIMEOUT", "0")
    with pytest.raises(ConfigError, match=r"MLM_DATA_STORE_TIMEOUT='0' must be a number of seconds above 0"):
        store_timeout()


def test_missing_credentials_are_named_in_one_line(monkeypatch, tmp_path, capsys):
    # No key anywhere: not in the environment, not in a credentials file botocore could find.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    use_environment(monkeypatch, {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                                  "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                  "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    clear_fsspec_caches()
    try:
        code = main(["verify", "s3://bucket/ds"])
    finally:
        clear_fsspec_caches()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == ("mlm-data error: reading s3://bucket/ds/manifest.json: no credentials for the store were "
                           "found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) (for a local "
                           "S3-compatible server also AWS_ENDPOINT_URL)")
