"""What a long run is doing, as one line: counters in, text out, no I/O.

Workers count what they did (files, documents and text read; tokens made; rows, tokens and
shards written); the driver adds those counts up (``ProgressCounts.total``) and prints
``format_progress`` every few seconds. The estimate to completion weighs the two halves of the
pipeline by what they cost: reading, cleaning, splitting and tokenizing (measured by the text
read against the input's estimated size) take about 85 % of a BERT-pairs run, making and
writing rows the rest (measured by the tokens made into rows against the tokens made).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

#: Share of a run's work in the first stage (read, clean, split, tokenize); the profile in
#: ``docs/scaling.md`` puts it at 0.8-0.9 for BERT pairs.
FIRST_STAGE_SHARE = 0.85


@dataclass(frozen=True)
class ProgressCounts:
    """Running totals; every field only grows."""

    files_read: int = 0
    documents_read: int = 0
    text_bytes_read: int = 0   # characters of document text read
    tokens: int = 0            # tokens of the documents that were tokenized
    tokens_placed: int = 0     # of those, tokens whose window has been made into rows
    rows_written: int = 0
    row_tokens_written: int = 0
    shards_written: int = 0
    buckets_written: int = 0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, int]) -> ProgressCounts:
        """Counts from a ``{name: value}`` mapping; other names are ignored."""
        return cls(**{n: int(values[n]) for n in cls.names() if n in values})

    @classmethod
    def total(cls, parts: Iterable[ProgressCounts]) -> ProgressCounts:
        sums = dict.fromkeys(cls.names(), 0)
        for part in parts:
            for n in sums:
                sums[n] += getattr(part, n)
        return cls(**sums)


@dataclass(frozen=True)
class RunSize:
    """What the driver knows up front about the run's size."""

    files: int
    text_bytes: int  # estimated
    buckets: int     # train + validation


def fraction_done(counts: ProgressCounts, size: RunSize) -> float:
    """Estimated share of the run's work done, in [0, 1].

    >>> size = RunSize(files=4, text_bytes=1000, buckets=2)
    >>> fraction_done(ProgressCounts(files_read=2, text_bytes_read=500), size)
    0.425
    >>> fraction_done(ProgressCounts(files_read=4, text_bytes_read=990, tokens=300, tokens_placed=150), size)
    0.925
    """
    if size.files and counts.files_read >= size.files:
        first = 1.0
    else:
        first = min(0.99, counts.text_bytes_read / size.text_bytes) if size.text_bytes else 0.0
    second = 0.0
    if first == 1.0 and counts.tokens:
        second = min(1.0, counts.tokens_placed / counts.tokens)
    if size.buckets and counts.buckets_written >= size.buckets:
        return 1.0
    return round(FIRST_STAGE_SHARE * first + (1 - FIRST_STAGE_SHARE) * second, 6)


def format_duration(seconds: float) -> str:
    """``h:mm:ss``.

    >>> format_duration(5), format_duration(3725.4)
    ('0:00:05', '1:02:05')
    """
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M"


def format_progress(counts: ProgressCounts, size: RunSize, *, elapsed: float) -> str:
    """One line for a terminal or a log.

    >>> size = RunSize(files=16, text_bytes=100_000_000, buckets=2)
    >>> print(format_progress(ProgressCounts(files_read=8, documents_read=14000, text_bytes_read=50_000_000,
    ...                                      tokens=12_400_000), size, elapsed=60))
    0:01:00 read 8/16 files, 14,000 docs, 50.0/100.0 MB; tokens 12.4 M; wrote 0/2 buckets, 0 rows (0 shards); ETA 0:01:21
    """
    done = fraction_done(counts, size)
    if done >= 1.0:
        eta = "done"
    elif done >= 0.01 and elapsed > 0:
        eta = f"ETA {format_duration(elapsed * (1 - done) / done)}"
    else:
        eta = "ETA --"
    return (f"{format_duration(elapsed)} read {counts.files_read}/{size.files} files, {counts.documents_read:,} docs, "
            f"{counts.text_bytes_read / 1e6:,.1f}/{size.text_bytes / 1e6:,.1f} MB; tokens {_millions(counts.tokens)}; "
            f"wrote {counts.buckets_written}/{size.buckets} buckets, {counts.rows_written:,} rows "
            f"({counts.shards_written} shards); {eta}")


def format_sample_progress(documents: int, chars: int, budget: int, *, elapsed: float) -> str:
    """The line shown while text for tokenizer training is read.

    >>> format_sample_progress(1200, 3_500_000, 512 * 2**20, elapsed=4)
    '0:00:04 tokenizer sample: read 1,200 docs, 3.5 MB (stops at 536.9 MB or the end of the input)'
    """
    return (f"{format_duration(elapsed)} tokenizer sample: read {documents:,} docs, {chars / 1e6:,.1f} MB "
            f"(stops at {budget / 1e6:,.1f} MB or the end of the input)")


class Throttle:
    """Lets an action through at most every ``interval`` seconds: from the first call on, or
    (``wait_first``) only once an interval has passed since it was made.

    >>> now = [0.0]
    >>> t, w = Throttle(2.0, clock=lambda: now[0]), Throttle(2.0, clock=lambda: now[0], wait_first=True)
    >>> [(t.ready(), w.ready()) for now[0] in (0.0, 1.0, 2.5, 3.0, 4.6)]
    [(True, False), (False, False), (True, True), (False, False), (True, True)]
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic,
                 wait_first: bool = False) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = clock() if wait_first else None

    def ready(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


@dataclass(frozen=True)
class ProgressSettings:
    """How a run shows its progress: every ``interval`` seconds, rewriting one terminal line
    (``terminal``) or as log lines."""

    interval: float
    terminal: bool


class LinePrinter:
    """Shows progress lines: on a terminal one line rewritten in place, else one log line each."""

    def __init__(self, settings: ProgressSettings, *, emit: Callable[[str], None],
                 write: Callable[[str], None]) -> None:
        self._terminal = settings.terminal
        self._emit = emit
        self._write = write
        self._open = False

    def show(self, line: str) -> None:
        if self._terminal:
            self._write(f"\r\033[K{line}")
            self._open = True
        else:
            self._emit(line)

    def end(self) -> None:
        """Finish the rewritten line, so what is printed next starts on a line of its own."""
        if self._open:
            self._write("\n")
            self._open = False
