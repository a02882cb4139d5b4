"""Which object-store errors are worth retrying, and retrying them: bounded, logged, jittered.

Failures fall into three kinds:

- transient (5xx, throttling such as S3 ``SlowDown`` or HTTP 429, connection resets, timeouts):
  ``retry`` tries again with capped exponential backoff and jitter, logging each retry as a
  warning; when the attempts run out, ``StorageError`` says what was being done to which URL
  and the last error;
- refusals (403, a missing bucket): ``is_access_denied`` / ``says_missing_bucket`` recognise
  them, ``mlm_data.storage`` turns them into ``StorageError`` at once, naming the URL;
- anything else propagates unchanged (``FileNotFoundError`` for a missing object, ...).

The clients below retry too (botocore up to ``AWS_MAX_ATTEMPTS`` times, s3fs and gcsfs a few
times for their own lists of errors); this layer is the last, bounded one, and it also covers
what they give up on. Errors are recognised by class *names*, HTTP status and S3 error codes
found anywhere in the exception's cause chain, so this module imports none of the clients.

Environment, read on every call so that tests and worker processes can tune it:

``MLM_DATA_RETRY_ATTEMPTS``
    tries per operation, the first included (default 6; at least 1).
``MLM_DATA_RETRY_BASE_DELAY``
    seconds before the first retry (default 0.5); the delay doubles with each retry, times a
    random factor in [0.5, 1.5).
``MLM_DATA_RETRY_MAX_DELAY``
    cap on one delay, in seconds (default 20). With the defaults an operation gives up after
    8-23 s of waiting (15 s on average).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mlm_data.errors import ConfigError, MlmDataError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS_ENV = "MLM_DATA_RETRY_ATTEMPTS"
BASE_DELAY_ENV = "MLM_DATA_RETRY_BASE_DELAY"
MAX_DELAY_ENV = "MLM_DATA_RETRY_MAX_DELAY"

#: Exception class names (anywhere in the MRO) that mean "try again": connection problems and
#: timeouts from the standard library, botocore, aiohttp, urllib3, requests and google-api-core.
#: Names, not imports, so this module needs none of those packages.
_TRANSIENT_NAMES = frozenset({
    "ConnectionError", "TimeoutError", "IncompleteRead", "RemoteDisconnected",
    # botocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError", "HTTPClientError",
    # aiohttp
    "ClientConnectionError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
    "ServerTimeoutError",
    # urllib3 / requests
    "ProtocolError", "ChunkedEncodingError", "ProxyError",
    # google-api-core
    "ServiceUnavailable", "InternalServerError", "TooManyRequests", "BadGateway", "GatewayTimeout",
    "DeadlineExceeded",
})

#: Error codes in S3-style responses that mean "try again" even though some come with a 4xx.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException", "BandwidthLimitExceeded",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    "OperationAborted", "PriorRequestNotComplete",
})
_DENIED_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidToken", "ExpiredToken", "AccountProblem", "403",
})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})

#: ``errno`` values of an ``OSError`` that mean "try again". s3fs turns ``SlowDown`` and 503
#: into ``EBUSY`` and ``InternalError`` into ``EREMOTEIO``.
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EBUSY", "EAGAIN", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED",
                                      "ECONNREFUSED", "EPIPE", "EREMOTEIO", "ENETUNREACH",
                                      "EHOSTUNREACH")
    if hasattr(errno, name)
)

#: Last resort for an ``OSError`` that carries nothing but text.
_TRANSIENT_WORDS = ("slowdown", "slow down", "reduce your request rate", "throttl",
                    "service unavailable", "internal error", "internalerror", "timed out", "temporarily",
                    "reset by peer", "try again")

_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        FileExistsError)


# --------------------------------------------------------------------------------------------
# Classification


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (s3fs keeps botocore's ``ClientError`` as the cause)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _http_facts(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and error code of a client's error, when it carries them.

    botocore ``ClientError`` has ``response = {"Error": {"Code": ...}, "ResponseMetadata":
    {"HTTPStatusCode": ...}}``; gcsfs ``HttpError`` and google-api-core errors have an integer
    ``code``; aiohttp ``ClientResponseError`` has ``status``; requests' ``HTTPError`` has
    ``response.status_code``.
    """
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        code = response["Error"].get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (status if isinstance(status, int) else None), (str(code) if code else None)
    if response is not None and isinstance(getattr(response, "status_code", None), int):
        return response.status_code, None
    for attr in ("status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value, None
    return None, None


def _verdict(exc: BaseException) -> bool | None:
    """True (transient), False (permanent) or None (this link of the chain does not say)."""
    if isinstance(exc, MlmDataError):
        return False
    status, code = _http_facts(exc)
    if code in _TRANSIENT_CODES:
        return True
    if code in _DENIED_CODES or code in _MISSING_BUCKET_CODES:
        return False
    if status is not None:
        return status in (408, 429) or status >= 500
    if isinstance(exc, _PERMANENT_OS_ERRORS):
        return False
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError):
        if exc.errno in _TRANSIENT_ERRNOS:
            return True
        text = str(exc).lower()
        if text.startswith("forbidden"):  # gcsfs's 403
            return False
        if any(word in text for word in _TRANSIENT_WORDS):
            return True
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a store hiccup worth retrying rather than a real refusal.

    The first link of the cause chain that says either way decides: ``OSError(EBUSY)`` from
    s3fs is transient, and so is its cause ``ClientError`` with code ``SlowDown``;
    ``FileNotFoundError`` caused by ``NoSuchBucket`` is not.

    >>> is_transient(ConnectionResetError(104, "Connection reset by peer"))
    True
    >>> is_transient(PermissionError("Access Denied"))
    False
    """
    for link in _chain(exc):
        verdict = _verdict(link)
        if verdict is not None:
            return verdict
    return False


def is_access_denied(exc: BaseException) -> bool:
    """A 401/403 from any client (s3fs ``PermissionError``, gcsfs ``OSError('Forbidden: ...')``)."""
    for link in _chain(exc):
        status, code = _http_facts(link)
        if code in _DENIED_CODES or status in (401, 403) or isinstance(link, PermissionError):
            return True
        if type(link) is OSError and str(link).lower().startswith("forbidden"):
            return True
    return False


#: What the clients raise when they find no credentials at all (matched by name: the client
#: libraries are optional imports).
_NO_CREDENTIALS = {"NoCredentialsError": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                   "PartialCredentialsError": "both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                   "DefaultCredentialsError": "GOOGLE_APPLICATION_CREDENTIALS (or run `gcloud auth "
                                              "application-default login`)"}


def missing_credentials(exc: BaseException) -> str | None:
    """What to set, when ``exc`` says the client found no credentials; else None."""
    for link in _chain(exc):
        fix = _NO_CREDENTIALS.get(type(link).__name__)
        if fix:
            return fix
    return None


def says_missing_bucket(exc: BaseException) -> bool:
    for link in _chain(exc):
        if _http_facts(link)[1] in _MISSING_BUCKET_CODES:
            return True
        if "bucket does not exist" in str(link).lower():
            return True
    return False


# --------------------------------------------------------------------------------------------
# Retrying


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 6
    """Tries per operation, the first included."""
    base_delay: float = 0.5
    """Seconds before the first retry; doubled for each further retry."""
    max_delay: float = 20.0
    """Cap on a single delay, in seconds."""

    def __post_init__(self) -> None:
        problems = []
        if self.attempts < 1:
            problems.append(f"{ATTEMPTS_ENV}={self.attempts} (must be at least 1)")
        if self.base_delay < 0:
            problems.append(f"{BASE_DELAY_ENV}={self.base_delay} (must be >= 0)")
        if self.max_delay < 0:
            problems.append(f"{MAX_DELAY_ENV}={self.max_delay} (must be >= 0)")
        if problems:
            raise ConfigError("storage retry settings: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if environ is None else environ
        default = cls()
        values: dict[str, float] = {}
        for field, name, kind in (("attempts", ATTEMPTS_ENV, int), ("base_delay", BASE_DELAY_ENV, float),
                                  ("max_delay", MAX_DELAY_ENV, float)):
            raw = env.get(name, "").strip()
            if not raw:
                values[field] = getattr(default, field)
                continue
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name}={raw!r} is not a valid "
                                  f"{'whole number' if kind is int else 'number of seconds'}") from None
        return cls(attempts=int(values["attempts"]), base_delay=values["base_delay"],
                   max_delay=values["max_delay"])

    def delay(self, retry_number: int, jitter: float) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based); ``jitter`` in [0, 1).

        >>> RetryPolicy(base_delay=1.0, max_delay=5.0).delay(4, 0.5)
        5.0
        """
        return min(self.max_delay, self.base_delay * 2 ** (retry_number - 1)) * (0.5 + jitter)


def describe(exc: BaseException) -> str:
    """``"OSError [503, SlowDown]: Please reduce your request rate."``: type, HTTP facts, first line."""
    status, code = next(((s, c) for s, c in map(_http_facts, _chain(exc)) if s or c), (None, None))
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    facts = ", ".join(str(x) for x in (status, code) if x)
    return f"{type(exc).__name__}{f' [{facts}]' if facts else ''}{f': {first}' if first else ''}"


def retry(fn: Callable[[], T], *, what: str, attempts: int | None = None, base_delay: float | None = None,
          max_delay: float | None = None, sleep: Callable[[float], None] = time.sleep,
          jitter: Callable[[], float] = random.random) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures with capped backoff and jitter.

    ``what`` names the operation and its URL (``"writing s3://b/ds/manifest.json"``) for the
    log and the error. Settings not passed come from ``RetryPolicy.from_env()``. A permanent
    error propagates unchanged at once; when the attempts run out, ``StorageError`` wraps the
    last transient one.
    """
    env = RetryPolicy.from_env()
    policy = RetryPolicy(attempts=env.attempts if attempts is None else attempts,
                         base_delay=env.base_delay if base_delay is None else base_delay,
                         max_delay=env.max_delay if max_delay is None else max_delay)
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc):
                fix = missing_credentials(exc)
                if fix:
                    raise StorageError(f"{what}: no credentials for the store were found; set {fix} "
                                       "(for a local S3-compatible server also AWS_ENDPOINT_URL)") from exc
                raise
            if attempt == policy.attempts:
                raise StorageError(
                    f"{what}: still failing after {attempt} attempt(s) over {time.monotonic() - started:.1f}s "
                    f"(last error: {describe(exc)}); the store is unreachable or overloaded: check the "
                    f"endpoint and network, try again later, or allow more retries with {ATTEMPTS_ENV}"
                ) from exc
            delay = policy.delay(attempt, jitter())
            log.warning("%s: transient error (%s); retry %d/%d in %.2fs", what, describe(exc), attempt,
                        policy.attempts - 1, delay)
            sleep(delay)
        else:
            if attempt > 1:
                log.info("%s: succeeded on attempt %d/%d", what, attempt, policy.attempts)
            return result
    raise AssertionError("unreachable")
