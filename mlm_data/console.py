"""What both console scripts (``mlm-data`` and ``mlm-train``) do around a command: quiet logging
and the rule that a user-facing failure is one line on stderr, ``PROG error: ...``, with exit
status 2, never a traceback from inside a library."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mlm_data.errors import MARKER, find_user_message

#: Libraries whose INFO chatter (connection pools, credential lookups, runner internals) would
#: drown the progress lines a user reads.
_NOISY = ("apache_beam", "absl", "urllib3", "botocore", "aiobotocore", "fsspec", "s3fs", "gcsfs", "google",
          "matplotlib")


class DropProjectErrors(logging.Filter):
    """Drop log records that carry one of the project's error messages.

    Beam logs a failing DoFn's exception with its traceback at ERROR (from the runner, and from
    each SDK worker process through the runner) before re-raising it; ``run_command`` prints
    that message once, as the last line, so the logged copies would only bury it. Records
    without the marker, a genuine bug's traceback among them, pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return MARKER not in text


class DropHarmlessWorkerWarnings(logging.Filter):
    """Drop the start-up warning every Beam SDK worker process sends on a local multi-process
    run ("No semi_persistent_directory found": it concerns user-registered schemas and logical
    types, which this project does not use), so an error stays the only line a user sees."""

    HARMLESS = ("No semi_persistent_directory found",)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Worker: "):
            return True
        return not any(h in record.getMessage() for h in self.HARMLESS)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        for kind in (DropProjectErrors, DropHarmlessWorkerWarnings):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def write_stderr(text: str) -> None:
    """Text to stderr as is, flushed (a progress line rewritten in place needs both)."""
    sys.stderr.write(text)
    sys.stderr.flush()


def echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_command(command: Callable[[], int], *, program: str) -> int:
    """Run ``command``; turn a project error (also one a runner or loader worker wrapped) into
    one line, ``{program} error: ...``, and exit status 2, and Ctrl-C into the line
    ``interrupted`` and status 130. Anything else is a bug and keeps its traceback."""
    try:
        return command()
    except KeyboardInterrupt:
        echo("interrupted")
        return 130
    except Exception as e:
        message = find_user_message(e)
        if message is None:
            raise
        echo(f"{program} error: {message.removeprefix(MARKER)}")
        return 2
