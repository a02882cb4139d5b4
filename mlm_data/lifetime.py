"""Worker processes that die with the process they work for, and process names that survive pid reuse.

A SIGKILL of the driver used to leave its workers running: Beam's SDK workers (~220 MB each,
and they went on writing shards) and DataLoader workers (~330 MB each, alive half an hour
later). A worker therefore calls ``bind_to(owner)`` as it starts (Beam: ``DoFn.setup``;
torch: the DataLoader's ``worker_init_fn``), with the ``ProcessId`` its owner recorded when it
built the work:

- when the owner is the worker's parent (DataLoader workers), Linux's
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill the worker the moment the parent
  dies; the parent is checked again right after, in case it died before the call;
- otherwise (Beam's ``multi_processing`` runner starts each SDK worker through ``/bin/sh -c``,
  so the driver is its grandparent; or not on Linux) a daemon thread checks every half
  second that the owner still exists, and ends the worker when it does not.

Workers that write also call ``exit_if_orphaned(owner)`` before publishing anything, so
nothing is written once the owner is gone. A worker on another machine (Dataflow) is not
bound: its job outlives the submitting process by design.

``ProcessId`` names a process by pid *and* start time (and the machine and pid namespace), so
a pid reused by an unrelated process is not mistaken for the owner; ``mlm_data.scratch`` and
the writer lease use it to tell a live owner from a dead one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

#: ``PR_SET_PDEATHSIG`` from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
_SIGKILL = 9
#: Exit status of a worker that ends itself because its owner is gone.
ORPHAN_EXIT_STATUS = 70
POLL_SECONDS = 0.5
#: Names the driver in the environment its worker processes inherit (see ``as_driver``).
DRIVER_ENV = "MLM_DATA_DRIVER"
_HAS_PROC = os.path.exists("/proc/self/stat")


@dataclass(frozen=True)
class ProcessId:
    """One process, for as long as it lives: a reused pid has another start time."""

    pid: int
    started: str
    """Start time: clock ticks since boot on Linux (``/proc/<pid>/stat``), '' where unknown."""
    machine: str
    """The operating system instance and pid namespace the pid belongs to."""
    host: str
    """The host name, for messages."""

    @classmethod
    def current(cls) -> ProcessId:
        return cls.of(os.getpid())  # type: ignore[return-value]

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """Another process of this machine, by pid; None if there is none."""
        started = _start_time(pid)
        if started is None:
            return None
        return cls(pid=pid, started=started, machine=machine_id(), host=socket.gethostname())

    def is_here(self) -> bool:
        """Whether this process can see the one named (same machine, same pid namespace)."""
        return self.machine == machine_id()

    def alive(self) -> bool | None:
        """True or False for a process on this machine; None (unknown) for one elsewhere."""
        if not self.is_here():
            return None
        started = _start_time(self.pid)
        if started is None:
            return False
        return not self.started or not started or started == self.started

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def machine_id() -> str:
    """A short hash of the boot id and the pid namespace (Linux) or the host name (elsewhere):
    equal for two processes exactly when their pids are comparable."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip())
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _start_time(pid: int) -> str | None:
    """The process's start time as text, '' if it exists but the time is unknown, None if it
    does not exist."""
    if not _HAS_PROC:
        return _start_time_portable(pid)
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return _start_time_portable(pid)
    # The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left
        return None
    return fields[19]


def _start_time_portable(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


# --------------------------------------------------------------------------------------------
# Binding workers to their owner


@contextmanager
def as_driver() -> Iterator[ProcessId]:
    """Name this process, for the worker processes started meanwhile, as the one they serve.

    For workers that a runner starts before any of our code runs in them (Beam's SDK
    workers inherit the environment and call ``bind_to_driver`` as they start).
    """
    me = ProcessId.current()
    before = os.environ.get(DRIVER_ENV)
    os.environ[DRIVER_ENV] = json.dumps(asdict(me))
    try:
        yield me
    finally:
        if before is None:
            os.environ.pop(DRIVER_ENV, None)
        else:
            os.environ[DRIVER_ENV] = before


def bind_to_driver() -> None:
    """``bind_to`` the process named by ``as_driver`` in this process's environment, if any."""
    raw = os.environ.get(DRIVER_ENV)
    if not raw:
        return
    try:
        fields = json.loads(raw)
        owner = ProcessId(pid=int(fields["pid"]), started=str(fields["started"]), machine=str(fields["machine"]),
                          host=str(fields["host"]))
    except (ValueError, TypeError, KeyError):
        return
    bind_to(owner)

_bound: set[ProcessId] = set()
_bound_lock = threading.Lock()


def bind_to(owner: ProcessId) -> None:
    """Make this process end when ``owner`` does (see the module docstring). Idempotent; a
    no-op inside the owner itself and on another machine."""
    if not owner.is_here() or owner.pid == os.getpid():
        return
    with _bound_lock:
        if owner in _bound:
            return
        _bound.add(owner)
    if sys.platform.startswith("linux") and os.getppid() == owner.pid and _set_parent_death_signal():
        if os.getppid() != owner.pid:  # the parent died before the kernel was told
            os._exit(ORPHAN_EXIT_STATUS)
        return
    exit_if_orphaned(owner)
    threading.Thread(target=_watch, args=(owner,), name="mlm-data-owner-watch", daemon=True).start()


def exit_if_orphaned(owner: ProcessId) -> None:
    """End this process at once (no clean-up that could write anything) if ``owner`` is gone."""
    if owner.pid != os.getpid() and owner.alive() is False:
        os._exit(ORPHAN_EXIT_STATUS)


def _watch(owner: ProcessId) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        exit_if_orphaned(owner)


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
