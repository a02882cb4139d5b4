"""The rules both console scripts share: one line per user error under the script's own name,
tracebacks only for bugs, and the filters that keep Beam from repeating our errors."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from mlm_data.console import DropProjectErrors, run_command
from mlm_data.errors import InputError, find_user_message
from pipelines.quiet_run import _Relay


def fail(exc: BaseException):
    def command() -> int:
        raise exc
    return command


def test_a_project_error_is_one_line_under_the_scripts_name(capsys):
    assert run_command(fail(InputError("a.txt: binary content")), program="mlm-train") == 2
    assert capsys.readouterr().err == "mlm-train error: a.txt: binary content\n"


def test_a_wrapped_error_is_found_without_beams_step_name(capsys):
    wrapped = RuntimeError("Traceback (most recent call last):\n  File ...\nmlm_data.errors.InputError: "
                           "mlm-data error: a.txt: binary content [while running 'ReadDocuments/ReadFiles']\n")
    assert find_user_message(wrapped) == "mlm-data error: a.txt: binary content"
    assert run_command(fail(wrapped), program="mlm-data") == 2
    assert capsys.readouterr().err == "mlm-data error: a.txt: binary content\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_command(fail(ZeroDivisionError("division by zero")), program="mlm-data")


def test_ctrl_c_is_one_line_and_status_130(capsys):
    assert run_command(fail(KeyboardInterrupt()), program="mlm-data") == 130
    assert capsys.readouterr().err == "interrupted\n"


def record(message: str, exc: BaseException | None = None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("apache_beam.runners.common", level, __file__, 1, message, (), exc_info)


def test_logged_copies_of_a_project_error_are_dropped_and_bugs_are_not():
    keep = DropProjectErrors().filter
    assert not keep(record("mlm-data error: a.txt: binary content [while running 'X']"))
    assert not keep(record("Error processing instruction", InputError("a.txt: binary content")))
    assert keep(record("division by zero", ZeroDivisionError("division by zero")))
    assert keep(record("mlm-data error: quoted in a warning", level=logging.WARNING))


def relay(text: bytes, *, muted: bool = False) -> bytes:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    relay = _Relay()
    relay.muted = muted
    thread = threading.Thread(target=relay.run, args=(r, out_w))
    thread.start()
    os.write(w, text)
    os.close(w)
    thread.join(timeout=10)
    os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        return f.read()


OURS = (b"Traceback (most recent call last):\n  File \"read.py\", line 72, in process\n"
        b"mlm_data.errors.InputError: mlm-data error: a.txt: binary content\n\n"
        b"During handling of the above exception, another exception occurred:\n\n"
        b"Traceback (most recent call last):\n  File \"sdk_worker.py\", line 310, in _execute\n"
        b"mlm_data.errors.InputError: mlm-data error: a.txt: binary content [while running 'X']\n\n")
BUG = b"Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nZeroDivisionError: division by zero\n\n"


def test_worker_output_loses_our_tracebacks_and_keeps_the_rest():
    text = b"starting\n" + OURS + b"between\n" + BUG + b"end without newline"
    assert relay(text) == b"starting\nbetween\n" + BUG + b"end without newline"
    assert relay(text, muted=True) == b""
