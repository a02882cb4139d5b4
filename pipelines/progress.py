"""Progress of a running pipeline, from the workers to the driver's terminal and log.

Workers count through ``ProgressTally``, which does two things:

- increments Beam counters (namespace ``mlm_data``, names ``progress_*``), which remote runners
  (Dataflow) report while the job runs: the driver polls ``PipelineResult.metrics()``;
- on local runners, also keeps the totals in a small JSON file per DoFn instance in a scratch
  folder, rewritten at most twice a second. Beam's local runners only hand counters over when
  the whole pipeline has finished (``FnApiRunner.run_pipeline`` returns after the last stage),
  in-process and with worker processes alike, so the driver reads these files instead.

``ProgressMonitor`` is the driver side: a thread that adds up the counts every ``interval``
seconds and prints ``mlm_data.progress.format_progress``: on a terminal as one line rewritten
in place, in a log as a line per interval.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from mlm_data.progress import (
    LinePrinter,
    ProgressCounts,
    ProgressSettings,
    RunSize,
    Throttle,
    format_duration,
    format_progress,
)
from pipelines.counters import NAMESPACE

#: How often a worker rewrites its progress file, at most.
_FILE_INTERVAL = 0.5


class ProgressTally:
    """A DoFn's progress counts: Beam counters, plus a file the local driver reads."""

    def __init__(self, directory: str | None) -> None:
        self._totals = dict.fromkeys(ProgressCounts.names(), 0)
        self._path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}.json") if directory else None
        self._throttle = Throttle(_FILE_INTERVAL)

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            if n:
                Metrics.counter(NAMESPACE, f"progress_{name}").inc(n)
                self._totals[name] += n
        if self._path and self._throttle.ready():
            self.flush()

    def flush(self) -> None:
        """Write the totals now (call when a bundle ends, so the last counts are not lost)."""
        if not self._path:
            return
        tmp = f"{self._path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self._totals, f)
            os.replace(tmp, self._path)
        except OSError:  # the driver removed its scratch folder: nobody is watching any more
            pass


def read_tallies(directory: str) -> ProgressCounts:
    """The sum of every worker's progress file (files being replaced are skipped this time)."""
    parts = []
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")]
    except FileNotFoundError:
        return ProgressCounts()
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                parts.append(ProgressCounts.from_mapping(json.load(f)))
        except (OSError, ValueError):
            continue
    return ProgressCounts.total(parts)


def metrics_counts(result: Any) -> ProgressCounts:
    """The progress counters a running job reports (attempted values: they move while it runs)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in found.get("counters", []):
        name = counter.key.metric.name
        if name.startswith("progress_"):
            name = name.removeprefix("progress_")
            totals[name] = totals.get(name, 0) + int(counter.attempted or counter.committed or 0)
    return ProgressCounts.from_mapping(totals)


class ProgressMonitor:
    """Prints progress every ``settings.interval`` seconds while the pipeline runs.

    Counts come from the workers' files in ``directory`` (local runners) until ``watch`` hands
    it a running job's result (remote runners), whose metrics it polls from then on. A last
    line is printed when it stops.
    """

    def __init__(self, settings: ProgressSettings, size: RunSize, *, directory: str | None,
                 emit: Callable[[str], None], write: Callable[[str], None]) -> None:
        self._interval = settings.interval
        self._size = size
        self._directory = directory
        self._printer = LinePrinter(settings, emit=emit, write=write)
        self._result: Any = None
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="mlm-data-progress", daemon=True)
        self._said_unavailable = False

    def __enter__(self) -> ProgressMonitor:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._show()
        self._printer.end()

    def watch(self, result: Any) -> None:
        """Poll this running job's metrics from now on."""
        self._result = result

    def counts(self) -> ProgressCounts | None:
        """The counts so far, or None while a remote job's runner reports no metrics."""
        if self._result is not None:
            try:
                return metrics_counts(self._result)
            except Exception:  # e.g. Beam's DaskRunner: "collecting metrics will come later"
                return None
        return read_tallies(self._directory) if self._directory else ProgressCounts()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._show()

    def _show(self) -> None:
        elapsed = time.monotonic() - self._started
        counts = self.counts()
        if counts is not None:
            self._printer.show(format_progress(counts, self._size, elapsed=elapsed))
        elif not self._said_unavailable:
            self._printer.show(f"{format_duration(elapsed)} running; this runner reports no progress while it runs")
            self._said_unavailable = True


def run_pipeline(pipeline: Any, settings: ProgressSettings | None, size: RunSize, *, directory: str | None,
                 emit: Callable[[str], None], write: Callable[[str], None]) -> None:
    """Run ``pipeline`` to the end, showing its progress unless ``settings`` is None.

    Local runners run the whole pipeline inside ``run()`` and report through the files in
    ``directory``; remote runners return from ``run()`` at once, and their job's metrics are
    polled until ``wait_until_finish()`` returns.
    """
    if settings is None:
        pipeline.run().wait_until_finish()
        return
    with ProgressMonitor(settings, size, directory=directory, emit=emit, write=write) as monitor:
        result = pipeline.run()
        if directory is None:
            monitor.watch(result)
        result.wait_until_finish()
