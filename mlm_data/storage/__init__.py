"""Small fsspec helpers: one place that knows how to read, write and list local paths and URLs.

Writes are atomic from a reader's point of view: locally a temporary file is renamed over the
target; on object stores one PUT (or one completed multipart upload) publishes the whole object
under its final key, and a retried write rewrites the same key with the same bytes.

Every operation retries transient store errors (``mlm_data.storage.retries``: 5xx, throttling,
connection resets, timeouts; bounded, with backoff and jitter, each retry logged; tuned with
``MLM_DATA_RETRY_ATTEMPTS``, ``MLM_DATA_RETRY_BASE_DELAY`` and ``MLM_DATA_RETRY_MAX_DELAY``). A
refusal (403) or a missing bucket raises ``StorageError`` at once, naming the URL; a missing
file or object is ``FileNotFoundError`` from the readers (callers decide what it means: "not a
dataset", "no checkpoint yet", ...).

Endpoints and credentials are never set here: each client reads its standard environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ... for ``s3://``;
``GOOGLE_APPLICATION_CREDENTIALS`` and ``STORAGE_EMULATOR_HOST`` for ``gs://``), and fsspec adds
any constructor option from ``FSSPEC_<PROTOCOL>_<OPTION>`` (e.g. ``FSSPEC_GS_TOKEN=anon``).

Every client gets its timeouts from ``MLM_DATA_STORE_TIMEOUT`` (``mlm_data.storage.clients``),
and every attempt at an operation here is cut off after it, so a store that never answers
fails a command in bounded time. Open and list store URLs through ``url_to_fs`` and
``open_url`` so that they get the same timeouts.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import fsspec.core
from fsspec.asyn import AsyncFileSystem
from fsspec.exceptions import FSTimeoutError

from mlm_data.errors import StorageError
from mlm_data.storage.clients import StoreUnreachable, attempt_limit, client_options, store_timeout
from mlm_data.storage.retries import (
    RetryPolicy,
    describe,
    is_access_denied,
    is_transient,
    retry,
    says_missing_bucket,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: abandoned temporaries are never removed
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TEMPORARY_PREFIX", "RetryPolicy", "exists", "filesystem", "is_access_denied", "is_local", "is_transient",
    "join", "list_files", "open_url", "publish_file", "read_bytes", "read_text", "remove",
    "remove_abandoned_temporaries", "retry", "url_to_fs", "write_bytes",
]

#: Local writes go to a temporary named ``.tmp-<uuid>-<name>`` beside the target first.
TEMPORARY_PREFIX = ".tmp-"
#: How long an empty, unlocked temporary may be a writer's between creating and locking it.
_CREATION_GRACE_S = 10.0


# --------------------------------------------------------------------------------------------
# Permanent errors, named


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _bucket_missing(fs: fsspec.AbstractFileSystem, url: str, exc: BaseException) -> bool:
    """Whether a "not found" for ``url`` means its bucket does not exist.

    s3fs says so (``NoSuchBucket``); gcsfs answers a plain 404 either way, so ask about the
    bucket itself. An answer other than "not found" (a hiccup, a refusal) is not taken as
    proof.
    """
    if says_missing_bucket(exc):
        return True
    try:
        _limited(fs, "info", _bucket(url))
    except FileNotFoundError:
        return True
    except Exception:
        return False
    return False


_CREDENTIALS_HINT = {
    "s3": "the AWS credentials this process uses (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role)",
    "gs": "the Google credentials this process uses (GOOGLE_APPLICATION_CREDENTIALS, the worker's "
          "service account)",
    "gcs": "the Google credentials this process uses (GOOGLE_APPLICATION_CREDENTIALS, the worker's "
           "service account)",
}


def _permanent(url: str, action: str, exc: BaseException) -> StorageError | None:
    """The ``StorageError`` for a refusal worth stopping on, or None."""
    if is_access_denied(exc):
        return StorageError(f"{url}: access denied while {action} ({describe(exc)}); check "
                            f"{_CREDENTIALS_HINT.get(url.split('://', 1)[0], 'the credentials')} and the "
                            "bucket's permissions")
    if says_missing_bucket(exc):
        return _no_bucket(url, action)
    return None


def _no_bucket(url: str, action: str) -> StorageError:
    return StorageError(f"{url}: bucket {_bucket(url)!r} does not exist (while {action}); create it or "
                        "correct the URL (and check AWS_ENDPOINT_URL / STORAGE_EMULATOR_HOST if you use one)")


# --------------------------------------------------------------------------------------------
# Clients, with their timeouts


def url_to_fs(url: str, *, streaming: bool = False) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's ``url_to_fs`` with this project's client timeouts (``streaming``: see
    ``mlm_data.storage.clients.client_options``)."""
    return fsspec.core.url_to_fs(url, **client_options(_protocol(url), streaming=streaming))


def open_url(url: str, mode: str = "rb", **kwargs: object) -> fsspec.core.OpenFile:
    """``fsspec.open`` for a file read or written piece by piece, with the client timeouts."""
    return fsspec.open(url, mode, **kwargs, **client_options(_protocol(url), streaming=True))


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _limited(fs: fsspec.AbstractFileSystem, method: str, *args: object, nbytes: int = 0, listing: bool = False,
             **kwargs: object) -> object:
    """One attempt at ``fs.method(*args)``, cut off after the store timeout (plus the allowance
    for ``nbytes``), whatever the client's own retries would do."""
    limit = attempt_limit(fs, nbytes=nbytes, listing=listing)
    try:
        return getattr(fs, method)(*args, **kwargs, **limit)
    except FSTimeoutError as exc:
        raise StoreUnreachable(f"no complete answer within {limit.get('timeout', 0):.1f}s "
                               f"(MLM_DATA_STORE_TIMEOUT={store_timeout():g}s)") from exc


# --------------------------------------------------------------------------------------------
# The operations


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/', keeping a scheme like ``s3://`` intact."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


@contextmanager
def _refusals_named(url: str, action: str) -> Iterator[None]:
    """Turn a client's 403 or missing-bucket error into a ``StorageError`` naming ``url``."""
    try:
        yield
    except (StorageError, FileNotFoundError):
        raise
    except Exception as exc:
        error = _permanent(url, action, exc)
        if error is None:
            raise
        raise error from exc


def read_bytes(url: str) -> bytes:
    """The whole file or object; ``FileNotFoundError`` (naming ``url``) if it does not exist.

    Raises ``StorageError`` for a missing bucket, a refusal, or a transient failure that
    outlasted the retries.
    """
    fs, path = url_to_fs(url)

    def fetch() -> bytes:
        size = int(_limited(fs, "info", path).get("size") or 0) if isinstance(fs, AsyncFileSystem) else 0
        return _limited(fs, "cat_file", path, nbytes=size)  # type: ignore[return-value]

    try:
        with _refusals_named(url, "reading"):
            return retry(fetch, what=f"reading {url}")
    except FileNotFoundError as exc:
        if not is_local(url) and _bucket_missing(fs, url, exc):
            raise _no_bucket(url, "reading") from None
        raise FileNotFoundError(errno.ENOENT, "no such file or object", url) from None


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def write_bytes(url: str, data: bytes) -> None:
    """Publish ``data`` at ``url`` in one step, so readers see the old state or the whole new one."""
    fs, path = url_to_fs(url)
    if is_local(url):
        try:
            _write_local(path, data)
        except PermissionError as exc:
            raise StorageError(f"{url}: permission denied while writing ({exc.strerror})") from None
        return
    try:
        with _refusals_named(url, "writing"):
            retry(lambda: _limited(fs, "pipe_file", path, data, nbytes=len(data)), what=f"writing {url}")
    except FileNotFoundError:
        # Object stores have no directories to be missing: "not found" on a write is the bucket.
        raise _no_bucket(url, "writing") from None


def check_writable(url: str) -> None:
    """Write and delete a small probe beside ``url`` (nothing at ``url`` itself is touched), for
    a file a run writes only at its end: a wrong path fails before the run, not after it.
    ``StorageError`` naming ``url`` if it cannot be written."""
    if is_local(url) and os.path.isdir(url_to_fs(url)[1]):
        raise StorageError(f"{url}: is a directory; give a file path")
    probe = f"{url}{TEMPORARY_PREFIX}probe-{uuid.uuid4().hex}"
    try:
        write_bytes(probe, b"")
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"{url}: cannot be written (a folder on its path is a file)") from None
    except OSError as exc:
        raise StorageError(f"{url}: cannot be written ({exc.strerror or exc})") from None
    remove(probe)


def _write_local(path: str, data: bytes) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            # Held until the rename: a temporary nobody holds was left by a writer that died
            # (see ``remove_abandoned_temporaries``).
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_abandoned_temporaries(url: str) -> list[str]:
    """Delete the temporary files that ``write_bytes`` calls killed mid-write left in the
    folder ``url``, and return their names.

    A live writer holds an exclusive ``flock`` on its temporary from just after creating it
    until it is renamed, so a temporary that can be locked belongs to a dead process. An empty
    one that young may be a writer's between creating and locking it; it is kept. Object
    stores get no temporaries (one PUT publishes an object), so only local folders have any.
    """
    if not is_local(url) or fcntl is None:
        return []
    folder = url_to_fs(url)[1]
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(TEMPORARY_PREFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written
            st = os.fstat(fd)
            if st.st_size == 0 and time.time() - st.st_mtime < _CREATION_GRACE_S:
                continue
            try:
                if os.stat(path).st_ino == st.st_ino:
                    os.remove(path)
                    removed.append(name)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)
    return removed


def publish_file(local_path: str, url: str) -> None:
    """Move a finished local file to ``url`` in one step and remove the local file.

    Locally a rename (the caller keeps the file in the target's folder, as a temporary named
    with ``TEMPORARY_PREFIX`` that it holds locked while writing, so it is atomic); on an object
    store one upload (a single PUT, or a multipart upload completed at the end), so the object
    appears whole or not at all. Memory stays small whatever the file's size.
    """
    fs, path = url_to_fs(url)
    if is_local(url):
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.replace(local_path, path)
        except PermissionError as exc:
            raise StorageError(f"{url}: permission denied while writing ({exc.strerror})") from None
        return
    size = os.path.getsize(local_path)
    try:
        with _refusals_named(url, "writing"):
            retry(lambda: _limited(fs, "put_file", local_path, path, nbytes=size), what=f"writing {url}")
    except FileNotFoundError:
        raise _no_bucket(url, "writing") from None
    os.remove(local_path)


def exists(url: str) -> bool:
    """Whether a file or object exists at ``url``, asking the store (not a cached listing)."""
    fs, path = url_to_fs(url)
    fs.invalidate_cache(path)
    with _refusals_named(url, "checking whether it exists"):
        return bool(retry(lambda: _limited(fs, "exists", path), what=f"checking {url}"))


def remove(url: str) -> None:
    """Delete one file or object if it exists."""
    fs, path = url_to_fs(url)
    try:
        with _refusals_named(url, "deleting"):
            retry(lambda: _limited(fs, "rm_file", path), what=f"deleting {url}")
    except FileNotFoundError:
        pass


def list_files(url: str) -> list[str]:
    """Relative paths of every file below ``url`` (empty when it does not exist)."""
    fs, path = url_to_fs(url)
    fs.invalidate_cache(path)
    try:
        with _refusals_named(url, "listing"):
            found = retry(lambda: _limited(fs, "find", path, listing=True), what=f"listing {url}")
    except FileNotFoundError:
        return []
    root = path.rstrip("/") + "/"
    return sorted(p[len(root):] for p in found if p.startswith(root))


def filesystem(url: str) -> fsspec.AbstractFileSystem:
    return url_to_fs(url)[0]
