"""How long a store may keep us waiting: one setting for every client, and a bounded total.

Without limits a store that accepts connections and never answers held each operation for
~405 s (s3fs's five tries of botocore's five tries of a 15 s read), and our own retries
multiplied that to ~41 min; a refused connection took ~60 s where the backoff alone is 8-23 s.
Here one setting fixes every layer:

``MLM_DATA_STORE_TIMEOUT`` (seconds, default 15)
    - every request waits at most this long to connect and at most this long for the next
      bytes of an answer (botocore ``connect_timeout``/``read_timeout`` for ``s3://``, aiohttp's
      ``sock_connect``/``sock_read`` for ``gs://``);
    - one attempt at an operation (one call into s3fs or gcsfs, their own retries included)
      is cut off after this long plus 4 s per MiB it moves (fsspec's ``sync`` timeout), so a
      slow but live transfer finishes and a dead one does not hold on;
    - the clients do not retry connection failures and timeouts themselves (botocore makes
      one attempt unless ``AWS_MAX_ATTEMPTS`` says otherwise; gcsfs's fixed six tries with up
      to 16 s sleeps are bypassed by raising ``StoreUnreachable``, which gcsfs does not catch),
      so ``mlm_data.storage.retries`` is the one retry layer for them.

The bound that follows, for an operation on a small object (a manifest, a lease) with the
retry settings ``A`` attempts and backoff ``B`` (8-23 s with the defaults, see
``mlm_data.storage.retries``): a store that refuses connections fails it after ``B``; one that
accepts and never answers, after at most ``A × T + B`` (6 × 15 s + 8-23 s, under 2 min).

Options a user sets through fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` variables win, key by key
(e.g. ``FSSPEC_S3_CONFIG_KWARGS='{"read_timeout": 120}'``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import fsspec.config
from fsspec.asyn import AsyncFileSystem

from mlm_data.errors import ConfigError

TIMEOUT_ENV = "MLM_DATA_STORE_TIMEOUT"
DEFAULT_TIMEOUT = 15.0
#: Allowance per MiB moved in one attempt, on top of the timeout: a floor of 256 KiB/s.
SECONDS_PER_MIB = 4.0
#: A listing may take several requests (1,000 keys each).
LISTING_FACTOR = 4


class StoreUnreachable(ConnectionError):
    """A connection failure or timeout, raised where a client would otherwise retry it itself."""


def store_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``MLM_DATA_STORE_TIMEOUT`` in seconds (read on every call, so workers and tests can set it)."""
    return seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT, environ)


def seconds_from_env(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``."""
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"environment variable {name}={raw!r} must be a number of seconds above 0 "
                          f"(default {default:g})")
    return value


def attempt_limit(fs: fsspec.AbstractFileSystem, *, nbytes: int = 0, listing: bool = False) -> dict[str, float]:
    """Keyword arguments that cut one attempt at an fsspec call off (``{"timeout": s}``).

    Only asynchronous filesystems (s3fs, gcsfs) take it; local files need none.
    """
    if not isinstance(fs, AsyncFileSystem):
        return {}
    t = store_timeout()
    return {"timeout": t * (LISTING_FACTOR if listing else 1) + SECONDS_PER_MIB * nbytes / 2**20}


def client_options(protocol: str, *, streaming: bool = False) -> dict[str, Any]:
    """Constructor options that put the timeouts on the client for ``protocol``; ``{}`` for
    protocols without a network client. The user's fsspec configuration wins key by key.

    ``streaming`` is for files read piece by piece (input corpora): there no retry loop of ours
    wraps each piece, so gcsfs keeps its own retries (bounded by the timeouts all the same).
    """
    t = store_timeout()
    if protocol in ("s3", "s3a"):
        ours: dict[str, Any] = {"config_kwargs": {"connect_timeout": t, "read_timeout": t}}
        if not os.environ.get("AWS_MAX_ATTEMPTS"):
            ours["config_kwargs"]["retries"] = {"total_max_attempts": 1}
    elif protocol in ("gs", "gcs"):
        timeout, tracing = _gcs_session(t)
        ours = {"requests_timeout": timeout}
        if not streaming:
            ours["session_kwargs"] = {"trace_configs": [tracing]}
    else:
        return {}
    user = fsspec.config.conf.get(protocol, {})
    merged = dict(ours)
    for key, value in user.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            combined = {**merged[key], **value}
            if key == "session_kwargs" and "trace_configs" in value:
                combined["trace_configs"] = [*merged[key].get("trace_configs", []), *value["trace_configs"]]
            merged[key] = combined
        else:
            merged[key] = value
    return merged


@functools.cache
def _gcs_session(seconds: float) -> tuple[Any, Any]:
    """aiohttp's timeout and a trace hook for gcsfs, made once per value so that fsspec's
    instance cache (keyed by the options' text) reuses the filesystem."""
    import aiohttp

    async def unreachable(_session: Any, _ctx: Any, params: Any) -> None:
        exc = params.exception
        if isinstance(exc, (aiohttp.ClientConnectionError, TimeoutError)):
            raise StoreUnreachable(f"{params.method} {params.url.with_query(None)}: {type(exc).__name__}: "
                                   f"{exc or f'no answer within {seconds:g}s'}") from exc

    tracing = aiohttp.TraceConfig()
    tracing.on_request_exception.append(unreachable)
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds), tracing
