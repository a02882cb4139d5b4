"""The project's own exception types.

Every error a user can cause (a bad config, a bad input file, a damaged dataset) is raised as
one of these, with a message that names the file or field, what was found and what to do. The
CLIs print only that message and exit non-zero; a traceback means a bug in this project.
"""

from __future__ import annotations

import re

#: Prefix on every message, so a CLI can find our message inside a runner's wrapped exception
#: (Beam re-raises worker errors as RuntimeError with the remote traceback as text). Each
#: console script prints the message under its own name (``mlm-train error: ...``).
MARKER = "mlm-data error: "
#: What Beam appends to an exception raised inside a DoFn; the message already names the file
#: or field, the step name would only be runner internals.
_BEAM_STEP = re.compile(r"( \[while running '[^']*'\])+$")


class MlmDataError(Exception):
    """Base class: a problem the user can fix, described in one message."""

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.startswith(MARKER) else MARKER + text


class ConfigError(MlmDataError):
    """A configuration file or command-line override is invalid."""


class InputError(MlmDataError):
    """An input file cannot be read as the configured format."""


class DatasetError(MlmDataError):
    """A dataset is missing, incomplete, of an unknown version or fails its checksums."""


class TokenizerError(MlmDataError):
    """A tokenizer file cannot be loaded or lacks what the task needs."""


class StorageError(MlmDataError):
    """An object store refused a request permanently (403, 404, missing bucket)."""


class OutputBusyError(MlmDataError):
    """Another run holds the writer lease of the output (or took it over from this one)."""


def find_user_message(exc: BaseException) -> str | None:
    """Return the project's message carried by ``exc``, even when a runner wrapped it.

    Beam runners re-raise a worker's exception as a new exception whose text contains the
    original traceback. We look through the cause chain first and then scan the text for the
    marker line, so the CLI can print one clear line instead of a page of runner internals.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MlmDataError):
            text = str(cur)
            if "Traceback (most recent call last)" in text:  # re-raised by a DataLoader worker
                last = [line for line in text.splitlines() if MARKER in line][-1]
                text = last[last.index(MARKER):].strip()
            return _BEAM_STEP.sub("", text)
        cur = cur.__cause__ or cur.__context__
    for line in str(exc).splitlines():
        idx = line.find(MARKER)
        if idx >= 0:
            return _BEAM_STEP.sub("", line[idx:].strip().strip("'\""))
    return None
