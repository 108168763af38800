"""The transport's decisions, free of I/O: which service a request names, how long
a call may take, which attempts may be sent again.

Theory of operation
-------------------
A request to ``http://users/path`` names the *service* ``users``.  One call is
retried by :func:`lb.retry` over the service's balancer; each attempt sends the
request to one instance and its outcome is classified by the HTTP attempt rules
(:mod:`sd.http._attempt`, shared with ``sd.http``), which give this table:

==========================================  ===================  ==========================
outcome                                     idempotent, replay-  otherwise
                                            able body
==========================================  ===================  ==========================
connect refused / connect or pool timeout   retry                retry (never sent)
other transport error (read, write, reset)  retry                give up (may have been sent)
503 with ``kitsd-draining: 1``             retry elsewhere      retry elsewhere (not sent
                                                                 to the app: a drain path)
status in ``retry_statuses`` (502/503/504)  retry                give up, response returned
other 5xx                                   give up, response    give up, response returned
                                            returned
anything else                               success              success
==========================================  ===================  ==========================

A 503 carrying :data:`DRAINING_HEADER` comes from an instance draining on its way
out (:mod:`kitsd.serve`'s drain path answered it; the app never saw the request):
it is an :class:`InstanceLeaving`, retried on another instance and counted neither
toward ejection nor by breakers (the :class:`~kitsd.core.errors.Leaving` marker).
Every other 5xx is reported to the balancer as an error (``status_code`` >= 500), so
its outlier detection can eject an instance that keeps answering 5xx; a
response the call ends on is returned to the caller as plain httpx would.
``Retry-After`` on a retried 429/503 becomes the wait before the next attempt
(the retry never sleeps past its deadline: then the response is returned).

A successful answer to a request that may be retried, whose ``Content-Length``
is at most ``buffer_body`` bytes (64 KiB), has its body read within the attempt
(:func:`buffered`): an instance killed between its headers and its body then
costs another attempt, not the caller's request.  Larger or unsized bodies
stream to the caller as with plain httpx (nothing could resend them).

The whole call is bounded by the request's own httpx timeout (the largest of
its phases), each attempt's wait by ``attempt_timeout`` (by default, for a
request that may be retried, half the call's time: after a hung instance, one
more attempt fits).
"""

from __future__ import annotations

import math
import re
from typing import Any

from kitsd.core.errors import ConnectionFailure, KitsdError, Leaving, MisuseError, shown_value
from kitsd.sd.http._attempt import StatusError

__all__ = [
    "DRAINING_HEADER",
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "AttemptFailed",
    "AttemptTimeout",
    "AttemptUnreachable",
    "InstanceLeaving",
    "attempt_cap",
    "buffered",
    "call_timeout",
    "keep_trying",
    "service_name",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})
#: The header of a draining instance's 503s (``kitsd.serve.DRAINING_HEADER``: the same
#: name, checked by a test; not imported, so the transport does not load kitsd.serve).
DRAINING_HEADER = "kitsd-draining"


class InstanceLeaving(StatusError, Leaving):
    """A 503 with :data:`DRAINING_HEADER`: the instance is draining on its way out and
    its drain path, not the app, answered.  Retried on another instance whatever the
    method; neither ejection nor breakers count it."""


def is_draining(status: int, headers: Any) -> bool:
    """Whether a response with ``status`` and ``headers`` says its instance is leaving."""
    return status == 503 and headers.get(DRAINING_HEADER) == "1"

# A host name as registries spell services: labels of letters, digits, '-' and '_'.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SERVICE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


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


def attempt_cap(
    attempt_timeout: float | None, may_retry: bool, call_seconds: float
) -> float | None:
    """The cap on each phase of one attempt: ``attempt_timeout`` if set; else half
    the call's time for a request that may be retried (so that after a hung
    instance one more attempt fits), else none (the call's deadline alone)."""
    if attempt_timeout is not None:
        return attempt_timeout
    return call_seconds / 2 if may_retry else None


def buffered(may_retry: bool, content_length: bytes | str | None, limit: int) -> bool:
    """Whether a successful response's body is read within its attempt: the request
    may be retried and the response says (``Content-Length``, ASCII digits) that its
    body is at most ``limit`` bytes.  Then a body cut off by an instance that died
    after its headers is an attempt failure, retried elsewhere; any other body
    streams to the caller as it arrives."""
    if not may_retry or content_length is None or not limit:
        return False
    if len(content_length) > 19 or not (content_length.isascii() and content_length.isdigit()):
        return False
    return int(content_length) <= limit


class AttemptFailed(KitsdError):
    """One attempt's transport error (``.error``, httpx's), and whether the call may
    try again (``.retryable``).  Internal to one call: the caller sees ``.error``."""

    def __init__(self, error: Exception, instance: str, *, retryable: bool) -> None:
        super().__init__(f"{error.__class__.__name__} from {instance}: {error}")
        self.error = error
        self.instance = instance
        self.retryable = retryable


class AttemptUnreachable(AttemptFailed, ConnectionFailure):
    """The request never reached the instance: a connection failure, so passive
    ejection may act at once."""


class AttemptTimeout(AttemptFailed, TimeoutError):
    """The attempt timed out (a ``TimeoutError``, so outlier detection can count it)."""


def keep_trying(
    attempt: int, error: BaseException, max_attempts: int,
    not_sent: tuple[type[BaseException], ...] = (),
) -> bool:
    """The retry callback's rule: retry classified failures that allow it
    (:class:`AttemptFailed`, ``sd.http.StatusError``), and errors of the
    ``not_sent`` kinds (an open breaker: nothing was sent)."""
    if attempt >= max_attempts:
        return False
    if isinstance(error, AttemptFailed | StatusError):
        return error.retryable
    return isinstance(error, not_sent)
