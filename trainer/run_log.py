"""``metrics.jsonl`` and the progress line: what a run tells people while it runs and after.

``metrics.jsonl`` holds one JSON object per logged step and split: ``step``, ``split``
(``train`` or the eval split), ``loss`` and the rest (``mlm_loss``, ``mlm_accuracy``, ``lr``,
``tokens_per_s``, ...). On a local disk each record is appended as it is made, so ``tail -f``
works; on an object store, which has no append, the whole file is republished (one PUT) at
every evaluation, checkpoint and at the end. A resumed run first drops the records after the
checkpoint it resumes from, so the file reads as if the run had never stopped. With
``tensorboard`` the same records also go to TensorBoard event files in the run folder
(``trainer.tensorboard_log``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from fsspec.core import url_to_fs

from mlm_data import storage
from mlm_data.errors import MlmDataError
from trainer.tensorboard_log import TensorBoardLog

METRICS_NAME = "metrics.jsonl"
log = logging.getLogger(__name__)


class MetricsLogError(MlmDataError):
    """A run's metrics.jsonl is damaged before its last line."""


def read_metrics(run: str) -> list[dict[str, Any]]:
    """Every record of ``run``'s metrics.jsonl (empty when there is none yet).

    A last line that is not a whole record is what a write cut short by a power loss or a full
    disk leaves: it is dropped with a one-line notice (a resumed run then rewrites the file
    without it). Damage further up is not that, and is refused naming the line.
    """
    url = storage.join(run, METRICS_NAME)
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        return []
    lines = [(i, line) for i, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            record = json.loads(line)
        except ValueError as e:
            record, problem = None, str(e)
        else:
            problem = "" if isinstance(record, dict) else f"a JSON {type(record).__name__}, not a record"
        if not problem:
            records.append(record)
        elif i == lines[-1][0]:
            log.warning("%s: ignoring its incomplete last line (line %d, %d bytes), cut short when the run "
                        "stopped", url, i, len(line))
        else:
            raise MetricsLogError(f"{url}: line {i} is damaged ({problem}), and it is not the last line, so it is "
                                  "not a write cut short; repair or delete that line, or move the file aside to "
                                  "start the log afresh")
    return records


class MetricsLog:
    """The run's metrics.jsonl, written by rank 0 only (``enabled=False`` on the others)."""

    def __init__(self, run: str, *, resume_step: int | None, enabled: bool = True, tensorboard: bool = False) -> None:
        self.url = storage.join(run, METRICS_NAME)
        self.enabled = enabled
        self.local = storage.is_local(self.url)
        self.lines: list[str] = []
        self.board = TensorBoardLog(run, resume_step=resume_step, enabled=False)
        if not enabled:
            return
        if resume_step is not None:
            kept = [r for r in read_metrics(run) if r["step"] <= resume_step]
            self.lines = [json.dumps(r) for r in kept]
        self._publish()
        self.board = TensorBoardLog(run, resume_step=resume_step, enabled=tensorboard)

    def append(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record)
        self.lines.append(line)
        self.board.append(record)
        if self.local:
            with open(url_to_fs(self.url)[1], "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def flush(self) -> None:
        """Make the store's copy complete (locally every record is already on disk)."""
        self.board.flush()
        if self.enabled and not self.local:
            self._publish()

    def close(self) -> None:
        self.board.close()

    def _publish(self) -> None:
        storage.write_bytes(self.url, "".join(line + "\n" for line in self.lines).encode("utf-8"))


def format_duration(seconds: float) -> str:
    """``75`` → ``'1:15'``; ``3725`` → ``'1:02:05'``."""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A one-line progress display on stderr: redrawn in place on a terminal, one line per log
    elsewhere (CI logs, files), so it never floods a log with carriage returns."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._open = False

    def update(self, step: int, record: dict[str, Any], *, elapsed: float, steps_done: int) -> None:
        if not self.enabled:
            return
        pct = 100.0 * step / self.total
        eta = elapsed / max(steps_done, 1) * (self.total - step)
        parts = [f"step {step}/{self.total} {pct:3.0f}%", f"loss {record['loss']:.4f}"]
        for key, name in (("mlm_accuracy", "mlm acc"), ("token_accuracy", "token acc"), ("accuracy", "acc")):
            if key in record:
                parts.append(f"{name} {record[key]:.3f}")
        parts += [f"lr {record['lr']:.2e}", f"{record['tokens_per_s'] / 1000:.1f}k tok/s",
                  f"{format_duration(elapsed)}<{format_duration(eta)}"]
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own (evaluation results, notes) without breaking the progress line."""
        if not self.enabled:
            return
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()
