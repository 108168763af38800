"""The HTTP attempt rules, written once: ``sd.http`` endpoints and ``kitsd.Transport``
both follow them.  Pure: no clock (``now``/``left`` are arguments), no socket, no thread.

Theory of operation
-------------------
An *attempt* is one request sent to one instance inside a call that
``lb.retry`` may repeat.  Four questions come up around it, each answered here:

1. **How long may it take?**  httpx bounds each phase of a request (connect,
   read, write, pool) separately.  :func:`cap_timeouts` caps every phase at the
   time left before the call's deadline and at the attempt's own cap, whichever
   is smaller, never below 1 ms (0 means "no wait at all" to some backends).  A
   phase with no timeout gets the cap.
2. **What did a transport error mean?**  :func:`transport_failure`:

   =====================================  ==========  ==========  =========
   httpx error                            never sent  instance's  timeout
                                                      fault
   =====================================  ==========  ==========  =========
   ``ConnectError``, ``ConnectTimeout``   yes         yes         (connect)
   ``PoolTimeout`` (our own pool full)    yes         no          no
   other ``TimeoutException``             no          yes         yes
   any other ``TransportError``           no          no          no
   =====================================  ==========  ==========  =========

   *Never sent*: the request provably did not reach the instance, so any
   method may be sent again.  *Instance's fault*: a connection-level failure
   that passive ejection may act on at once (a full local pool says nothing
   about the instance); ``sd.http`` raises those two as :class:`ConnectError`
   / :class:`ConnectTimeout` (:func:`unreachable`), httpx's classes carrying
   the ``ConnectionFailure`` marker, the transport as its own attempt error.
   A timeout of one attempt counts towards ``consecutive_errors`` ejection.
3. **What did a status mean?**  :func:`judge_status`: an *accepted* status is
   a success (the caller decides what it accepts: ``sd.http`` 2xx and
   ``accept_status``, the transport everything below 500 that is not a retry
   status).  Anything else is a failure reported as :class:`StatusError`;
   every 5xx counts towards ejection (``status_code`` >= 500); a failure may
   be retried only if the request is idempotent and replayable and the
   status is a retry status; a retried 429 or 503 waits its ``Retry-After``
   (:func:`parse_retry_after`: delta-seconds in ASCII digits or an HTTP date;
   anything else is ignored, never an error).
4. **Whose timeout was it?**  :func:`deadline_caused`: a timeout httpx raises
   is the deadline's when the deadline had cut that phase's timeout short, or
   when it fired as the deadline passed (each socket wait is capped at the
   time left, so a trickled body ends there); otherwise it is the configured
   timeout's and stays httpx's.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC
from typing import NamedTuple

import httpx

from kitsd.core.errors import ConnectionFailure, KitsdError

__all__ = [
    "PHASES",
    "RETRY_AFTER_STATUSES",
    "UNREACHED",
    "ConnectError",
    "ConnectTimeout",
    "StatusError",
    "StatusVerdict",
    "TransportFailure",
    "cap_timeouts",
    "deadline_caused",
    "judge_status",
    "parse_retry_after",
    "phase_of",
    "transport_failure",
    "unreachable",
]

#: httpx's timeout phases, in ``httpx.Timeout``'s order.
PHASES = ("connect", "read", "write", "pool")
#: Statuses whose ``Retry-After`` is honoured before a retry.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# The smallest per-phase timeout an attempt is given (0 means "do not wait" to some backends).
_MIN_TIMEOUT = 1e-3
# A timeout that fires this close to the deadline is the deadline's: the
# deadline-capped socket wait ends at it, give or take the clock's rounding.
_DEADLINE_SLACK = 0.005
# RFC 9110 delta-seconds: ASCII digits only ("²" and "١٢" are digits to str.isdigit()).
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
# Which phase each of httpx's timeout errors belongs to, and how to say it.
_PHASES: dict[type[httpx.TimeoutException], tuple[str, str]] = {
    httpx.ConnectTimeout: ("connect", "connecting to"),
    httpx.ReadTimeout: ("read", "reading from"),
    httpx.WriteTimeout: ("write", "writing to"),
    httpx.PoolTimeout: ("pool", "waiting for a connection to"),
}


def cap_timeouts(
    configured: Mapping[str, float | None] | None, left: float | None, cap: float | None = None
) -> dict[str, float | None]:
    """httpx's per-phase timeouts (``{"connect": ..., "read": ..., ...}``) for one
    attempt: each phase of ``configured`` capped by ``left`` (seconds before the
    call's deadline, ``None`` outside one) and ``cap`` (the attempt's own limit)."""
    limit = left
    if cap is not None and (limit is None or cap < limit):
        limit = cap
    get = (configured or _NONE).get
    connect, read, write, pool = get("connect"), get("read"), get("write"), get("pool")
    if limit is None:
        return {"connect": connect, "read": read, "write": write, "pool": pool}
    if limit < _MIN_TIMEOUT:
        limit = _MIN_TIMEOUT
    # each phase at most `limit` (PHASES, spelled out: this runs on every attempt)
    return {"connect": limit if connect is None or connect > limit else connect,
            "read": limit if read is None or read > limit else read,
            "write": limit if write is None or write > limit else write,
            "pool": limit if pool is None or pool > limit else pool}


_NONE: Mapping[str, float | None] = {}


class TransportFailure(NamedTuple):
    """What an httpx transport error says about one attempt (see the module's table)."""

    never_sent: bool
    instance_fault: bool
    timeout: bool


_CONNECT = TransportFailure(never_sent=True, instance_fault=True, timeout=False)
_POOL = TransportFailure(never_sent=True, instance_fault=False, timeout=False)
_TIMEOUT = TransportFailure(never_sent=False, instance_fault=True, timeout=True)
_OTHER = TransportFailure(never_sent=False, instance_fault=False, timeout=False)


def transport_failure(error: httpx.TransportError) -> TransportFailure:
    """Classify an httpx transport error (see the module's table)."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return _CONNECT
    if isinstance(error, httpx.PoolTimeout):
        return _POOL
    if isinstance(error, httpx.TimeoutException):
        return _TIMEOUT
    return _OTHER


class ConnectError(httpx.ConnectError, ConnectionFailure):
    """``httpx.ConnectError`` as an ``sd.http`` endpoint raises it: the request never
    reached the instance, so it is a :class:`kitsd.core.errors.ConnectionFailure`
    (the retry loop ejects the instance).  It stands in for httpx's error, with
    the same message, request, cause and traceback; ``except httpx.ConnectError``
    catches it as before."""


class ConnectTimeout(httpx.ConnectTimeout, ConnectionFailure):
    """``httpx.ConnectTimeout`` as an ``sd.http`` endpoint raises it (when the
    configured connect timeout, not the retry deadline, ran out): a
    :class:`kitsd.core.errors.ConnectionFailure`, like :class:`ConnectError`."""


#: The httpx errors after which the request provably never reached the instance.
UNREACHED = (httpx.ConnectError, httpx.ConnectTimeout)


def unreachable(error: httpx.ConnectError | httpx.ConnectTimeout) -> httpx.TransportError:
    """``error`` as the endpoint raises it: :class:`ConnectError` or
    :class:`ConnectTimeout`, same message and request (``error`` itself if it
    already is one).  Raise it ``from error.__cause__`` with ``error``'s traceback,
    so it reads as httpx's own."""
    if isinstance(error, ConnectionFailure):
        return error
    kind = ConnectTimeout if isinstance(error, httpx.TimeoutException) else ConnectError
    try:
        request: httpx.Request | None = error.request
    except RuntimeError:  # httpx raises it for an error made without a request
        request = None
    return kind(str(error), request=request).with_traceback(error.__traceback__)


def phase_of(error: httpx.TimeoutException) -> tuple[str, str]:
    """``(phase, what was being done)`` for an httpx timeout, e.g.
    ``("read", "reading from")``."""
    return _PHASES.get(type(error), ("read", "talking to"))


def deadline_caused(phase_limit: float | None, left_at_start: float, left_now: float) -> bool:
    """Whether a timeout of a phase whose configured limit is ``phase_limit`` came
    from the deadline: it had cut the limit short at the start (``left_at_start``
    below it), or it fired as the deadline passed (``left_now`` about zero)."""
    if left_now <= _DEADLINE_SLACK:
        return True
    return phase_limit is None or phase_limit > left_at_start


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds (ASCII digits) or
    an HTTP date (``now`` is the wall-clock time); ``None`` when absent or not one
    of those.  Never raises."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)  # ASCII digits: always a number, possibly huge
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        stamp = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, stamp - now)


class StatusVerdict(NamedTuple):
    """The outcome of a response status: ``failure`` (else a success),
    ``retryable`` (may be sent again), ``retry_after`` (seconds to wait first)."""

    failure: bool
    retryable: bool
    retry_after: float | None


_SUCCESS = StatusVerdict(failure=False, retryable=False, retry_after=None)


def judge_status(
    status: int,
    accepted: bool,
    *,
    retry_statuses: Collection[int] = (),
    may_retry: bool = False,
    retry_after: str | None = None,
    now: float = 0.0,
) -> StatusVerdict:
    """The verdict on a response whose status is ``status``; ``accepted`` is the
    caller's own rule (see the module docstring).  ``retry_after`` is the raw
    header, read only for a retried 429/503."""
    if accepted:
        return _SUCCESS
    retryable = may_retry and status in retry_statuses
    wait = None
    if retryable and status in RETRY_AFTER_STATUSES:
        wait = parse_retry_after(retry_after, now)
    return StatusVerdict(True, retryable, wait)


class StatusError(KitsdError):
    """An instance answered with a status that the caller does not accept.

    ``.status_code``, ``.instance``, ``.response`` (the ``httpx.Response``),
    ``.method`` and ``.path``; ``.retryable`` and ``.retry_after`` (seconds or
    ``None``) as :func:`judge_status` decided.  ``str()`` reads
    ``HTTP 503 from 127.0.0.1:8080 (GET /echo)``: the path, never the query or
    any header, which may hold secrets.  Not a ``ConnectionFailure``: the
    instance answered; a 5xx counts towards ejection (``status_code`` >= 500).
    """

    def __init__(
        self,
        response: httpx.Response,
        instance: str,
        method: str,
        path: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {response.status_code} from {instance} ({method} {path})")
        self.status_code: int = response.status_code
        self.instance = instance
        self.response = response
        self.method = method
        self.path = path
        self.retryable = retryable
        self.retry_after = retry_after

