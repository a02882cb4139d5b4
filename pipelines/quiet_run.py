"""A pipeline run whose only words on stderr are the CLI's own, also from worker processes.

With ``--direct_running_mode=multi_processing`` the SDK workers are child processes that share
this process's stderr and the terminal's process group, and they speak for themselves:

- a DoFn raising a project error makes each worker print the whole traceback to its stderr
  (Beam's ``SdkWorker._execute``) before the driver re-raises the error that the CLI prints
  as its one line;
- a Ctrl-C reaches every worker, and each prints its KeyboardInterrupt traceback; when only
  the driver gets the signal (``kill -INT``), Beam waits forever for workers nobody stopped.

``quiet_run()`` covers both for the length of a run. This process's stderr (which workers
inherit) becomes a pipe that a thread copies to the real stderr, leaving out any traceback
that carries a project error (the CLI prints that message once) and everything after an
interrupt. A SIGINT first terminates this process's children (with SIGTERM, which they obey
without a word), then raises KeyboardInterrupt as Python's own handler does, and the run ends
with KeyboardInterrupt whatever Beam wrapped it in. Anything else, a genuine bug's traceback
included, passes through unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from mlm_data.errors import MARKER

_TRACEBACK = b"Traceback (most recent call last):"
#: Lines that continue a traceback after its blank line (an exception chain).
_CHAINED = (b"During handling of the above exception", b"The above exception was the direct cause", _TRACEBACK)


@contextmanager
def quiet_run() -> Iterator[None]:
    """Run the body with worker output filtered and Ctrl-C made quiet (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there
        yield
        return
    relay = _Relay()
    sys.stderr.flush()
    try:
        real_stderr = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=relay.run, args=(read_end, real_stderr), name="stderr-relay", daemon=True)
    pump.start()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        relay.muted = True
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:  # already gone
                pass
        raise KeyboardInterrupt

    # A process started with SIGINT ignored (a background job of a script) keeps ignoring it.
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        if relay.muted:  # Beam re-raises a KeyboardInterrupt from inside a DoFn as a RuntimeError
            raise KeyboardInterrupt from None
        raise
    finally:
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # drops this process's hold on the pipe
        # The pipe ends when the last worker holding it has exited; one that outlives the run
        # (it should not) must not keep the command from returning.
        pump.join(timeout=5)
        if not pump.is_alive():
            os.close(real_stderr)


class _Relay:
    """Copies lines from the pipe to the real stderr, holding back each traceback until it is
    complete to see whether it carries a project error."""

    def __init__(self) -> None:
        self.muted = False
        self._block: list[bytes] | None = None  # the traceback being read, if any
        self._after_blank = False

    def run(self, source: int, target: int) -> None:
        self._target = target
        pending = b""
        try:
            while chunk := os.read(source, 1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._line(line + b"\n")
            if pending:
                self._line(pending)
            self._end_block()
        except OSError:  # the real stderr closed under us: nothing left to show
            pass
        finally:
            os.close(source)

    def _line(self, line: bytes) -> None:
        if self._block is not None:
            if self._after_blank and not line.startswith(_CHAINED):
                self._end_block()
            else:
                self._block.append(line)
                self._after_blank = not line.strip()
                return
        if line.startswith(_TRACEBACK):
            self._block, self._after_blank = [line], False
        else:
            self._write(line)

    def _end_block(self) -> None:
        block, self._block = self._block, None
        if block and not any(MARKER.encode() in line for line in block):
            self._write(b"".join(block))

    def _write(self, data: bytes) -> None:
        if not self.muted:
            os.write(self._target, data)


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid`` and theirs (Linux ``/proc``; elsewhere none are found, and
    a terminal's Ctrl-C still reaches the workers itself)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(b")")[2].split()[1])  # the name in (...) may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
