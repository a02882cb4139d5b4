"""A local, bounded, multi-process-safe cache of verified shards, with background prefetch.

Shards are fetched through fsspec (``mlm_data.dataset.shards.fetch_shard``: size and sha256 checked,
transient store errors retried with backoff by ``mlm_data.storage``), written under a
temporary name and published with ``os.replace``, so a cache file exists only once complete
and verified. Files are named by their sha256: content-addressed, a cache directory can be
shared by loaders, datasets and runs without ever serving a stale shard. A file already in
the cache is re-hashed the first time this cache object uses it (once per process: each
DataLoader worker has its own), since a persistent ``cache_dir`` outlives any check made
when it was filled; one that no longer matches its name is fetched again.

Several processes (DataLoader workers) share one directory. Coordination is by ``flock``:
a per-shard lock file makes one process download while the others wait; a shard in use is
held with a shared lock, and eviction (least recently used first, down to ``max_bytes``)
removes only files it can lock exclusively, so no process loses a shard it is reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from mlm_data.dataset.manifest import ShardEntry
from mlm_data.dataset.shards import fetch_shard
from trainer.loading.shard_reader import ShardRows

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: one process per cache directory
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_SUFFIX = ".arrow"
_HASH_CHUNK = 1 << 22


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ShardCache:
    """Verified shards on local disk, opened as ``ShardRows`` and kept open while in use.

    ``open`` returns a pinned shard; the ``keep_open`` most recently opened shards stay
    pinned (they are the ones the current batches read), older ones are released and become
    evictable. ``prefetch`` downloads shards on background threads without opening them.
    """

    def __init__(self, directory: str, *, max_bytes: int, keep_open: int, prefetch_threads: int = 2,
                 list_columns: tuple[str, ...], scalar_columns: tuple[str, ...]) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.max_bytes, self.keep_open = max_bytes, max(1, keep_open)
        self.list_columns, self.scalar_columns = list_columns, scalar_columns
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[str]] = {}
        self._open: OrderedDict[str, tuple[ShardRows, int]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=max(1, prefetch_threads), thread_name_prefix="shard-prefetch")
        self._warned_full = False
        self._verified: set[str] = set()  # sha256 of the files this object has hashed or fetched

    def path_of(self, entry: ShardEntry) -> str:
        return os.path.join(self.directory, entry.sha256 + _SUFFIX)

    def prefetch(self, shards: Iterable[tuple[str, ShardEntry]]) -> None:
        """Start downloading shards that are neither cached nor on their way (non-blocking)."""
        for url, entry in shards:
            with self._lock:
                if entry.sha256 in self._inflight or entry.sha256 in self._open:
                    continue
                if entry.sha256 in self._verified and os.path.exists(self.path_of(entry)):
                    continue
                self._inflight[entry.sha256] = self._pool.submit(self._fetch, url, entry)

    def local_path(self, url: str, entry: ShardEntry) -> str:
        """The cached file of ``entry``, downloading and verifying it first if needed."""
        with self._lock:
            future = self._inflight.get(entry.sha256)
            if future is None:
                future = Future()
                self._inflight[entry.sha256] = future
                mine = True
            else:
                mine = False
        if mine:
            try:
                future.set_result(self._fetch(url, entry))
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    def _fetch(self, url: str, entry: ShardEntry) -> str:
        try:
            path = self.path_of(entry)
            if self._intact(path, entry):
                return path
            with _locked(path + ".lock"):
                if self._intact(path, entry):
                    return path
                data = fetch_shard(url, num_bytes=entry.num_bytes, sha256=entry.sha256)
                tmp = os.path.join(self.directory, f".tmp-{uuid.uuid4().hex}-{entry.sha256}{_SUFFIX}")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                with self._lock:
                    self._verified.add(entry.sha256)
                log.debug("cached %s as %s", url, path)
            self._evict(keep=os.path.basename(path))
            return path
        finally:
            with self._lock:
                self._inflight.pop(entry.sha256, None)

    def _intact(self, path: str, entry: ShardEntry) -> bool:
        """Whether the cached file is the shard: by size, and on first use here by sha256 too.
        A file that fails is removed (the caller fetches it again), and says so."""
        if not _complete(path, entry):
            return False
        with self._lock:
            if entry.sha256 in self._verified:
                return True
        if _sha256_of(path) == entry.sha256:
            with self._lock:
                self._verified.add(entry.sha256)
            return True
        log.warning("shard cache %s: %s does not match its sha256 any more (changed on disk); fetching it again",
                    self.directory, os.path.basename(path))
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return False

    def open(self, url: str, entry: ShardEntry) -> ShardRows:
        """The shard's rows, pinned in the cache until ``keep_open`` newer shards are opened."""
        with self._lock:
            hit = self._open.get(entry.sha256)
            if hit is not None:
                self._open.move_to_end(entry.sha256)
                return hit[0]
        for attempt in range(3):
            path = self.local_path(url, entry)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # evicted by another process between the two calls
                if attempt == 2:
                    raise
                continue
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
            with contextlib.suppress(OSError):
                os.utime(path)  # recency for eviction
            try:
                rows = ShardRows(fd, source=url, num_rows=entry.num_rows, list_columns=self.list_columns,
                                 scalar_columns=self.scalar_columns)
            except BaseException:
                os.close(fd)
                raise
            break
        with self._lock:
            self._open[entry.sha256] = (rows, fd)
            while len(self._open) > self.keep_open:
                _, (old, old_fd) = self._open.popitem(last=False)
                old.close()
                os.close(old_fd)
        return rows

    def _evict(self, *, keep: str) -> None:
        """Remove least recently used unpinned shards (never ``keep``, about to be opened)
        until the cache fits ``max_bytes``."""
        files = []
        for name in os.listdir(self.directory):
            if name.endswith(_SUFFIX) and not name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(os.path.join(self.directory, name))
                    files.append((st.st_mtime, name, st.st_size))
        total = sum(size for _, _, size in files)
        if total <= self.max_bytes:
            return
        with self._lock:
            pinned = {sha + _SUFFIX for sha in self._open} | {keep}
        for _, name, size in sorted(files):
            if total <= self.max_bytes:
                return
            if name in pinned or not _try_remove(os.path.join(self.directory, name)):
                continue
            total -= size
            log.debug("evicted %s from the shard cache", name)
        if not self._warned_full:
            self._warned_full = True
            log.warning("shard cache %s holds %d bytes in use, over max_cache_bytes=%d; raise it to at least "
                        "the size of (shuffle_window_shards + prefetch_shards) shards", self.directory, total,
                        self.max_bytes)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for rows, fd in self._open.values():
                rows.close()
                os.close(fd)
            self._open.clear()


def _complete(path: str, entry: ShardEntry) -> bool:
    try:
        return os.path.getsize(path) == entry.num_bytes
    except FileNotFoundError:
        return False


def _sha256_of(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def _try_remove(path: str) -> bool:
    """Delete ``path`` unless some process holds it (a shared ``flock``)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:  # republished meanwhile: not ours to drop
                return False
            os.remove(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)
