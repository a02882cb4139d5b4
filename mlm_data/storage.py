"""Small fsspec helpers: one place that knows how to read, write and list local paths and URLs.

Writes are atomic from a reader's point of view: locally a temporary file is renamed over the
target; on object stores one PUT (or completed multipart upload) publishes the whole object.
Transient store errors are retried with exponential backoff and jitter; permanent ones (403,
404, missing bucket) raise at once with the URL in the message.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec
from fsspec.core import url_to_fs

from mlm_data.errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Exceptions that mean "try again": connection problems, timeouts, throttling, 5xx.
_TRANSIENT_NAMES = {
    "ConnectionError", "ConnectionResetError", "ConnectionAbortedError", "TimeoutError",
    "ServerDisconnectedError", "ClientConnectionError", "ClientOSError", "ClientPayloadError",
    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "IncompleteRead",
    "ProtocolError", "RemoteDisconnected", "TransportError", "ServiceUnavailable",
    "InternalServerError", "TooManyRequests", "BadGateway", "GatewayTimeout", "RetryError",
    "TransientError",
}
_TRANSIENT_WORDS = ("slowdown", "throttl", "503", "500", "502", "504", "429", "timed out",
                    "temporarily", "reset by peer", "internalerror", "service unavailable")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a store hiccup worth retrying rather than a real refusal."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    for cls in type(exc).__mro__:
        if cls.__name__ in _TRANSIENT_NAMES:
            return True
    text = str(exc).lower()
    return isinstance(exc, OSError) and any(w in text for w in _TRANSIENT_WORDS)


def retry(fn: Callable[[], T], *, what: str, attempts: int = 6, base_delay: float = 0.2,
          max_delay: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures with capped backoff + jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts:
                if isinstance(exc, FileNotFoundError):
                    raise
                if is_transient(exc):
                    raise StorageError(f"{what}: still failing after {attempts} attempts: {exc}") from exc
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s: transient error (%s), retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/', keeping a scheme like ``s3://`` intact."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def read_bytes(url: str) -> bytes:
    fs, path = url_to_fs(url)
    return retry(lambda: fs.cat_file(path), what=f"reading {url}")


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def write_bytes(url: str, data: bytes) -> None:
    """Publish ``data`` at ``url`` in one step, so readers see the old state or the whole new one."""
    fs, path = url_to_fs(url)
    if is_local(url):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    retry(lambda: fs.pipe_file(path, data), what=f"writing {url}")


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return bool(retry(lambda: fs.exists(path), what=f"checking {url}"))


def remove(url: str) -> None:
    """Delete one file or object if it exists."""
    fs, path = url_to_fs(url)
    try:
        retry(lambda: fs.rm_file(path), what=f"deleting {url}")
    except FileNotFoundError:
        pass


def list_files(url: str) -> list[str]:
    """Relative paths of every file below ``url`` (empty when it does not exist)."""
    fs, path = url_to_fs(url)
    try:
        found = retry(lambda: fs.find(path), what=f"listing {url}")
    except FileNotFoundError:
        return []
    root = path.rstrip("/") + "/"
    return sorted(p[len(root):] for p in found if p.startswith(root))


def filesystem(url: str) -> fsspec.AbstractFileSystem:
    return url_to_fs(url)[0]
