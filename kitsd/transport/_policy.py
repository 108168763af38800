"""The transport's decisions, free of I/O: which service a request names, how long
its attempts may take, what an attempt's outcome means, how long to wait.

Theory of operation
-------------------
A request to ``http://users/path`` names the *service* ``users``.  One call is
retried by :func:`lb.retry` over the service's balancer; each attempt sends the
request to one instance and its outcome is classified here:

==========================================  ===================  ==========================
outcome                                     idempotent, replay-  otherwise
                                            able body
==========================================  ===================  ==========================
connect refused / connect or pool timeout   retry                retry (never sent)
other transport error (read, write, reset)  retry                give up (may have been sent)
status in ``retry_statuses`` (502/503/504)  retry                give up, response returned
other 5xx                                   give up, response    give up, response returned
                                            returned
anything else                               success              success
==========================================  ===================  ==========================

Every 5xx is reported to the balancer as an error (``status_code`` >= 500), so
its outlier detection can eject an instance that keeps answering 5xx; a
response the call ends on is returned to the caller as plain httpx would.
``Retry-After`` on a retried 429/503 becomes the wait before the next attempt
(the retry never sleeps past its deadline: then the response is returned).

The whole call is bounded by the request's own httpx timeout (the largest of
its phases), each attempt's wait for response headers by ``attempt_timeout``.
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass
from typing import Any

from kitsd.core import validate
from kitsd.core.errors import ConnectionFailure, KitsdError, MisuseError, shown_value

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "AttemptFailed",
    "RetryableStatus",
    "Settings",
    "attempt_timeouts",
    "call_timeout",
    "parse_retry_after",
    "service_name",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})
_RETRY_AFTER_STATUSES = frozenset({429, 503})

# A host name as registries spell services: labels of letters, digits, '-' and '_'.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SERVICE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True, slots=True)
class Settings:
    """The options every attempt of a transport reads (checked once)."""

    retry_statuses: frozenset[int]
    retry_methods: frozenset[str]
    default_timeout: float
    attempt_timeout: float | None


def service_name(host: str) -> str:
    """The service a request's URL host names; :class:`sd.MisuseError` if it is not
    a valid host name."""
    if not host or len(host) > 253 or not _SERVICE.fullmatch(host):
        raise MisuseError(
            f"kitsd.Transport: the URL host {shown_value(host)} is not a valid service name "
            "(want letters, digits, '-', '_' and dots, as in http://users/path)"
        )
    return host


def call_timeout(extensions: Any, default: float) -> float:
    """Seconds the whole call may take: the largest phase of the request's httpx
    timeout (``request.extensions["timeout"]``), else ``default``."""
    timeouts = extensions.get("timeout") if extensions else None
    if not timeouts:
        return default
    best = 0.0
    for value in timeouts.values():
        if value is not None and value > best:
            best = value
    if not best > 0 or not math.isfinite(best):
        return default
    return float(best)


def attempt_timeouts(
    original: Any, remaining: float | None, cap: float | None
) -> dict[str, float | None]:
    """The httpx timeout dict for one attempt: each phase of ``original`` capped by
    the time left in the call and by the attempt's own ``cap``."""
    limit = remaining
    if cap is not None:
        limit = cap if limit is None else min(limit, cap)
    phases = ("connect", "read", "write", "pool")
    base = original or {}
    if limit is None:
        return {phase: base.get(phase) for phase in phases}
    limit = max(limit, 1e-3)  # 0 would mean "no wait at all" to some backends
    result: dict[str, float | None] = {}
    for phase in phases:
        value = base.get(phase)
        result[phase] = limit if value is None else min(value, limit)
    return result


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date,
    ``now`` being the wall-clock time), or ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


class AttemptFailed(KitsdError):
    """One attempt's transport error (``.error``, httpx's), and whether the call may
    try again (``.retryable``).  Internal to one call: the caller sees ``.error``."""

    def __init__(self, error: Exception, instance: str, *, retryable: bool) -> None:
        super().__init__(f"{error.__class__.__name__} from {instance}: {error}")
        self.error = error
        self.instance = instance
        self.retryable = retryable


class AttemptUnreachable(AttemptFailed, ConnectionFailure):
    """The request never reached the instance (a ConnectionFailure: the retry loop
    ejects it)."""


class AttemptTimeout(AttemptFailed, TimeoutError):
    """The attempt timed out (a ``TimeoutError``, so outlier detection can count it)."""


class RetryableStatus(KitsdError):
    """An instance answered a 5xx (or a configured retry status): ``.status_code``,
    ``.response``, ``.instance``, ``.retryable``, ``.retry_after`` (seconds or None)."""

    def __init__(
        self, response: Any, instance: str, *, retryable: bool, retry_after: float | None
    ) -> None:
        super().__init__(f"HTTP {response.status_code} from {instance}")
        self.status_code: int = response.status_code
        self.response = response
        self.instance = instance
        self.retryable = retryable
        self.retry_after = retry_after


def classify_status(
    status: int, headers_retry_after: str | None, instance: str, *, may_retry: bool,
    settings: Settings, now: float,
) -> tuple[bool, bool, float | None]:
    """``(is_failure, retryable, retry_after)`` for a response status."""
    retryable = may_retry and status in settings.retry_statuses
    failure = retryable or status >= 500
    retry_after = None
    if retryable and status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(headers_retry_after, now)
    return failure, retryable, retry_after


def may_retry(method: str, replayable: bool, settings: Settings) -> bool:
    """Whether a request may be sent again after it may have reached an instance."""
    return replayable and method in settings.retry_methods


def keep_trying(
    attempt: int, error: BaseException, max_attempts: int,
    not_sent: tuple[type[BaseException], ...] = (),
) -> bool:
    """The retry callback's rule: retry classified failures that allow it, and
    errors of the ``not_sent`` kinds (an open breaker: nothing was sent)."""
    if attempt >= max_attempts:
        return False
    if isinstance(error, AttemptFailed | RetryableStatus):
        return error.retryable
    return isinstance(error, not_sent)


def check_settings(
    *, max_attempts: int, retry_statuses: Any, retry_methods: Any, timeout: float,
    attempt_timeout: float | None,
) -> Settings:
    """Validate the transport's options; :class:`sd.MisuseError` or ``TypeError``."""
    validate.integer("max_attempts", max_attempts, minimum=1)
    statuses = frozenset(retry_statuses)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise MisuseError(f"retry_statuses must hold HTTP status codes, got {status!r}")
    if isinstance(retry_methods, str):
        raise TypeError("retry_methods must be a collection of method names, not a string")
    methods = frozenset(str(method).upper() for method in retry_methods)
    return Settings(statuses, methods, validate.seconds("timeout", timeout),
                    validate.optional_seconds("attempt_timeout", attempt_timeout))
