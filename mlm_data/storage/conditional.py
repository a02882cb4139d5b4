"""Conditional writes: create an object only if absent, replace or delete it only if unchanged.

This is what a single-writer lease needs from a store, done with each store's own atomic
primitive:

=========  ==================================  ==================================  ===========
store      create if absent                    replace / delete if unchanged       version
=========  ==================================  ==================================  ===========
local      ``os.link`` of a complete temp file  compare, then rename / unlink       sha256
``s3://``  PUT ``If-None-Match: *``            PUT / DELETE ``If-Match: <ETag>``   ETag
``gs://``  ``ifGenerationMatch=0``             ``ifGenerationMatch=<generation>``  generation
other      check, then write                   check, then write / delete          sha256
=========  ==================================  ==================================  ===========

Locally, replace and delete compare and then act, a window of microseconds that only two
takers of the same abandoned lease could share. Stores in the last row have no conditional
writes at all: ``supports_conditional_create`` says so and the lease warns about it.

Each call is retried like every storage operation. A retried conditional create can fail
because its own first try succeeded (the answer was lost): callers compare what is there
with what they wrote.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from dataclasses import dataclass

from mlm_data import storage
from mlm_data.errors import StorageError
from mlm_data.storage import _limited, _no_bucket, _refusals_named, retry, url_to_fs

_NATIVE = ("s3", "s3a", "gs", "gcs")


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the version a conditional replace or delete must match."""

    data: bytes
    version: str


def supports_conditional_create(url: str) -> bool:
    return storage.is_local(url) or _scheme(url) in _NATIVE


def create(url: str, data: bytes) -> bool:
    """Write ``data`` at ``url`` unless something is there already; whether it was written."""
    if storage.is_local(url):
        try:
            return _create_local(url_to_fs(url)[1], data)
        except PermissionError as exc:
            raise StorageError(f"{url}: permission denied while creating it ({exc.strerror})") from None
    fs, path = url_to_fs(url)
    scheme = _scheme(url)

    def attempt() -> bool:
        try:
            if scheme in ("s3", "s3a"):
                bucket, key = _split(path)
                _limited(fs, "call_s3", "put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            elif scheme in ("gs", "gcs"):
                _limited(fs, "pipe_file", path, data, mode="create", nbytes=len(data))
            elif _limited(fs, "exists", path):
                return False
            else:
                _limited(fs, "pipe_file", path, data, nbytes=len(data))
        except Exception as exc:
            if _precondition_failed(exc) or isinstance(exc, FileExistsError):
                return False
            raise
        fs.invalidate_cache(path)
        return True

    try:
        with _refusals_named(url, "creating"):
            return retry(attempt, what=f"creating {url}")
    except FileNotFoundError:
        # Object stores have no directories to be missing: "not found" on a write is the bucket.
        raise _no_bucket(url, "creating") from None


def read(url: str) -> Versioned | None:
    """The object and its version, or None if there is none."""
    if storage.is_local(url):
        try:
            data = storage.read_bytes(url)
        except FileNotFoundError:
            return None
        return Versioned(data, hashlib.sha256(data).hexdigest())
    fs, path = url_to_fs(url)
    scheme = _scheme(url)

    def attempt() -> Versioned | None:
        fs.invalidate_cache(path)
        try:
            # The version first: if the object changes before its bytes are read, a
            # conditional write with this version fails, as it should.
            info = _limited(fs, "info", path)
            data = _limited(fs, "cat_file", path, nbytes=int(info.get("size") or 0))  # type: ignore[union-attr]
        except FileNotFoundError:
            return None
        if scheme in ("s3", "s3a"):
            version = str(info.get("ETag") or "")  # type: ignore[union-attr]
        elif scheme in ("gs", "gcs"):
            version = str(info.get("generation") or "")  # type: ignore[union-attr]
        else:
            version = hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]
        return Versioned(data, version)  # type: ignore[arg-type]

    with _refusals_named(url, "reading"):
        return retry(attempt, what=f"reading {url}")


def replace(url: str, data: bytes, version: str) -> bool:
    """Overwrite the object only if it still has ``version``; whether it was written."""
    if not _native(url):
        current = read(url)
        if current is None or current.version != version:
            return False
        storage.write_bytes(url, data)
        return True
    fs, path = url_to_fs(url)

    def attempt() -> bool:
        try:
            bucket, key = _split(path)
            if _scheme(url) in ("s3", "s3a"):
                _limited(fs, "call_s3", "put_object", Bucket=bucket, Key=key, Body=data, IfMatch=version)
            else:
                _limited(fs, "call", "POST", f"{fs._location}/upload/storage/v1/b/{bucket}/o",  # type: ignore[attr-defined]
                         uploadType="media", name=key, ifGenerationMatch=version, data=data,
                         headers={"Content-Type": "application/json"})
        except Exception as exc:
            if _precondition_failed(exc) or isinstance(exc, (FileExistsError, FileNotFoundError)):
                return False
            raise
        fs.invalidate_cache(path)
        return True

    with _refusals_named(url, "replacing"):
        return retry(attempt, what=f"replacing {url}")


def delete(url: str, version: str) -> bool:
    """Delete the object only if it still has ``version``; whether it is gone now."""
    if not _native(url):
        current = read(url)
        if current is None:
            return True
        if current.version != version:
            return False
        storage.remove(url)
        return True
    fs, path = url_to_fs(url)

    def attempt() -> bool:
        try:
            bucket, key = _split(path)
            if _scheme(url) in ("s3", "s3a"):
                _limited(fs, "call_s3", "delete_object", Bucket=bucket, Key=key, IfMatch=version)
            else:
                _limited(fs, "call", "DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=version)
        except FileNotFoundError:
            return True
        except Exception as exc:
            if _precondition_failed(exc) or isinstance(exc, FileExistsError):
                return False
            raise
        fs.invalidate_cache(path)
        return True

    with _refusals_named(url, "deleting"):
        return retry(attempt, what=f"deleting {url}")


def _native(url: str) -> bool:
    return not storage.is_local(url) and _scheme(url) in _NATIVE


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _split(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, key


def _precondition_failed(exc: BaseException) -> bool:
    """S3's 412 ``PreconditionFailed`` (and 409 ``ConditionalRequestConflict``, a concurrent
    conditional write), wherever in the cause chain the client put it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
        cur = cur.__cause__ or cur.__context__
    return False


def _create_local(path: str, data: bytes) -> bool:
    """Write a complete temporary file, then ``os.link`` it to ``path``: the link fails if the
    name exists, so the file appears whole or not at all, and only once."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return _create_exclusive(path, data)  # a filesystem without hard links
        return True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _create_exclusive(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True
