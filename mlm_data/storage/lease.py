"""One writer per output: a lease object in the output, renewed while its run lives.

Two ``preprocess`` runs into one ``--output`` used to race: the last manifest won, the loser
printed a summary of data that had been replaced, and once one crashed on a temporary file
the other had cleaned away. Now a run holds ``<output>/.writer-lease.json`` from before its
first write until it ends:

- **taking it** is an atomic create-if-absent (``mlm_data.storage.conditional``: a hard link
  locally, ``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS). A second run finds
  the lease and stops with one line naming the holder;
- **renewing it**: a daemon thread rewrites it (conditionally on the version it last wrote)
  every tenth of the stale time, so a long run never looks abandoned;
- **stale**: a lease not renewed for ``MLM_DATA_LEASE_STALE_SECONDS`` (default 300, recorded
  in the lease by its holder), or held by a process of this machine that no longer exists
  (pid and start time, ``mlm_data.lifetime``), is taken over (conditionally, so two takers
  cannot both win) with a one-line notice. Clocks of machines sharing an output are assumed
  to agree to well within the stale time;
- **fencing**: the step that publishes checks that the lease is still its run's
  (``LeaseTicket.check``) and the driver checks again before it reports success, so a run
  that lost its lease (it stalled longer than the stale time and was taken over) neither
  publishes nor claims success;
- **releasing** it (a conditional delete) happens when the run ends, on success or failure.

Stores without conditional writes (anything but local paths, ``s3://`` and ``gs://``) get
check-then-write, and the run says so in one line: two runs started within the same second
could then both proceed; the fence still keeps the one whose lease was overwritten from
publishing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlm_data import storage
from mlm_data.errors import MlmDataError, OutputBusyError
from mlm_data.lifetime import ProcessId
from mlm_data.storage import conditional
from mlm_data.storage.clients import seconds_from_env

log = logging.getLogger(__name__)

LEASE_NAME = ".writer-lease.json"
LEASE_FORMAT = "mlm-data-writer-lease"
STALE_ENV = "MLM_DATA_LEASE_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 300.0
#: Renewals per stale period: a holder must miss this many in a row to be taken over.
RENEWALS_PER_STALE_PERIOD = 10


def stale_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``MLM_DATA_LEASE_STALE_SECONDS``: how long an unrenewed lease holds."""
    return seconds_from_env(STALE_ENV, DEFAULT_STALE_SECONDS, environ)


@dataclass(frozen=True)
class LeaseTicket:
    """What a worker needs to check that its run still holds the lease (small, picklable)."""

    url: str
    token: str

    def check(self, doing: str) -> None:
        """Raise ``OutputBusyError`` unless the lease at ``url`` is still this run's."""
        current = conditional.read(self.url)
        holder = _parse(current.data) if current is not None else None
        if holder is not None and holder.get("token") == self.token:
            return
        root = self.url.rsplit("/", 1)[0]
        now = (f"{_describe(holder)} holds it now" if holder is not None else "nobody holds it now")
        raise OutputBusyError(f"{root}: not {doing}: this run no longer holds the output's writer lease "
                              f"({now}); it stalled for longer than the stale time and another run took over. "
                              "Run again once the output is free")


class WriterLease:
    """``with WriterLease(root, command="mlm-data preprocess"):`` holds ``root``'s lease."""

    def __init__(self, root: str, *, command: str, echo: Callable[[str], None] = log.warning,
                 stale_after: float | None = None) -> None:
        self.root = root
        self.url = storage.join(root, LEASE_NAME)
        self.command = command
        self._echo = echo
        self.stale_after = stale_seconds() if stale_after is None else stale_after
        self.ticket = LeaseTicket(self.url, uuid.uuid4().hex)
        self._owner = ProcessId.current()
        self._acquired_at = 0.0
        self._version: str | None = None
        self._lost: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WriterLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- taking and giving back -------------------------------------------------------------

    def acquire(self) -> None:
        if not conditional.supports_conditional_create(self.url):
            self._echo(f"{self.root}: this store cannot create objects conditionally, so the writer lease is "
                       "checked, then written: two runs started within moments of each other could both proceed")
        self._acquired_at = time.time()
        for _ in range(5):
            current = conditional.read(self.url)
            if current is None:
                if conditional.create(self.url, self._body()) and self._confirm():
                    break
                continue
            holder = _parse(current.data)
            if holder is None:
                raise OutputBusyError(f"{self.url}: an unreadable writer lease is in the way; if no run is writing "
                                      f"to {self.root}, delete it and run again")
            reason = self._stale_reason(holder)
            if reason is None:
                raise OutputBusyError(self._busy_message(holder))
            if conditional.replace(self.url, self._body(), current.version) and self._confirm():
                self._echo(f"{self.root}: taking over the writer lease of {_describe(holder)}: {reason}")
                break
        else:
            raise OutputBusyError(f"{self.root}: the writer lease changed hands five times while this run tried to "
                                  "take it; other runs are starting here: wait for them, or choose another output")
        self._thread = threading.Thread(target=self._renew_until_stopped, name="mlm-data-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (never raises)."""
        self._stop.set()
        if self._thread is not None:
            # A renewal in flight finishes within the store's timeouts; one that lands after
            # the delete below fails its condition and changes nothing.
            self._thread.join(timeout=min(self.stale_after, 30.0))
        if self._version is None or self._lost is not None:
            return
        try:
            if not conditional.delete(self.url, self._version):
                current = conditional.read(self.url)
                holder = _parse(current.data) if current is not None else None
                if current is not None and holder is not None and holder.get("token") == self.ticket.token:
                    conditional.delete(self.url, current.version)
        except (MlmDataError, OSError) as exc:
            log.warning("%s: could not remove the writer lease (%s); it goes stale in %.0fs", self.url, exc,
                        self.stale_after)
        self._version = None

    def held(self) -> bool:
        """Whether this run took the lease and has not lost it (as far as it knows)."""
        return self._version is not None and self._lost is None

    def confirmed(self) -> bool:
        """Whether the store says this run still holds the lease (False when it cannot tell)."""
        if not self.held():
            return False
        try:
            self.ticket.check("checking")
        except (MlmDataError, OSError):
            return False
        return True

    def verify(self, doing: str) -> None:
        """Raise ``OutputBusyError`` unless this run still holds the lease."""
        if self._lost is not None:
            raise OutputBusyError(f"{self.root}: not {doing}: this run lost the output's writer lease to "
                                  f"{_describe(self._lost)}; run again once the output is free")
        self.ticket.check(doing)

    # -- renewing ----------------------------------------------------------------------------

    def _renew_until_stopped(self) -> None:
        interval = self.stale_after / RENEWALS_PER_STALE_PERIOD
        while not self._stop.wait(interval):
            try:
                if not self._renew():
                    return
            except (MlmDataError, OSError) as exc:
                log.warning("%s: could not renew the writer lease (%s); trying again in %.0fs", self.url, exc,
                            interval)

    def _renew(self) -> bool:
        """Rewrite the lease with a new time; False (and the run marked as lost) if it is not ours."""
        if self._stop.is_set():
            return False
        if self._version is not None and conditional.replace(self.url, self._body(), self._version):
            if self._confirm():
                return True
        current = conditional.read(self.url)
        holder = _parse(current.data) if current is not None else None
        if current is not None and holder is not None and holder.get("token") == self.ticket.token:
            self._version = current.version  # our renewal went through; its answer was lost
            return True
        if self._stop.is_set():
            return False
        self._lost = holder or {"command": "another run"}
        log.warning("%s: this run lost its writer lease to %s; it will not publish", self.root,
                    _describe(self._lost))
        return False

    def _confirm(self) -> bool:
        """Read the lease back: ours (and its version noted for the next conditional write)?"""
        current = conditional.read(self.url)
        holder = _parse(current.data) if current is not None else None
        if current is None or holder is None or holder.get("token") != self.ticket.token:
            return False
        self._version = current.version
        return True

    # -- contents ----------------------------------------------------------------------------

    def _body(self) -> bytes:
        return json.dumps({
            "format": LEASE_FORMAT, "token": self.ticket.token, "command": self.command,
            "owner": asdict(self._owner), "acquired_at": self._acquired_at, "renewed_at": time.time(),
            "stale_after": self.stale_after,
        }, indent=1).encode("utf-8")

    def _stale_reason(self, holder: Mapping[str, Any]) -> str | None:
        owner = _owner(holder)
        if owner is not None and owner.alive() is False:
            return f"that process no longer exists ({owner.describe()})"
        age = time.time() - float(holder.get("renewed_at") or 0)
        limit = float(holder.get("stale_after") or self.stale_after)
        if age > limit:
            return f"not renewed for {age:.0f}s (stale after {limit:.0f}s)"
        return None

    def _busy_message(self, holder: Mapping[str, Any]) -> str:
        age = max(0.0, time.time() - float(holder.get("renewed_at") or 0))
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("acquired_at") or 0)))
        limit = float(holder.get("stale_after") or self.stale_after)
        return (f"{self.root}: another run is writing here ({_describe(holder)}, started {started}, lease renewed "
                f"{age:.0f}s ago); wait for it to finish or choose another output. A lease not renewed for "
                f"{limit:.0f}s is taken over ({LEASE_NAME}, {STALE_ENV})")


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("format") != LEASE_FORMAT or not isinstance(body.get("token"), str):
        return None
    return body


def _owner(holder: Mapping[str, Any]) -> ProcessId | None:
    raw = holder.get("owner")
    try:
        return ProcessId(pid=int(raw["pid"]), started=str(raw["started"]), machine=str(raw["machine"]),
                         host=str(raw["host"]))
    except (TypeError, KeyError, ValueError):
        return None


def _describe(holder: Mapping[str, Any]) -> str:
    owner = _owner(holder)
    command = str(holder.get("command") or "another run")
    return f"{command}, {owner.describe()}" if owner is not None else command
