"""Private scratch directories that a killed run does not leave behind for good.

A run removes its scratch directory when it ends, but a SIGKILL (or a power cut) skips that,
and ``/tmp/mlm-data-shuffle-*`` (spilled shuffle data) and ``/tmp/mlm-data-shards-*`` (the
trainer's shard cache) used to stay forever. So each directory's name carries its owner
(``<prefix><machine>.<pid>.<start time>-<random>``) and every new run first removes the
directories of owners that no longer exist. The start time makes a reused pid harmless; the
machine part (boot and pid namespace) keeps a run from judging directories that another
container sharing ``/tmp`` owns. Directories named by older versions are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from mlm_data.lifetime import ProcessId

log = logging.getLogger(__name__)


def make_dir(prefix: str, *, parent: str | None = None) -> str:
    """A new private directory ``<prefix><owner tag>-<random>`` under ``parent`` (the temp dir),
    after removing those of ``prefix`` whose owners are gone (``remove_stale``)."""
    remove_stale(prefix, parent=parent)
    me = ProcessId.current()
    return tempfile.mkdtemp(prefix=f"{prefix}{me.machine}.{me.pid}.{me.started or 0}-", dir=parent)


def owner_of(name: str, prefix: str) -> ProcessId | None:
    """The owner recorded in a directory name made by ``make_dir``; None for other names.

    >>> owner_of("mlm-data-shuffle-8c3fd6a0.4242.98765-x1y2", "mlm-data-shuffle-").pid
    4242
    """
    if not name.startswith(prefix):
        return None
    tag = name[len(prefix):].split("-", 1)[0]
    parts = tag.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    machine, pid, started = parts
    return ProcessId(pid=int(pid), started="" if started == "0" else started, machine=machine, host="")


def remove_stale(prefix: str, *, parent: str | None = None) -> list[str]:
    """Delete the directories ``make_dir(prefix)`` made for processes that no longer exist."""
    parent = parent or tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        owner = owner_of(name, prefix)
        if owner is None or owner.alive() is not False:
            continue
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    if removed:
        log.info("removed %d scratch director%s of runs that no longer exist (%s*)", len(removed),
                 "y" if len(removed) == 1 else "ies", os.path.join(parent, prefix))
    return removed
