"""Outcome labels: how a call or an attempt ended, as a closed set of strings fit
for metric labels, judged from the error (if any) by :func:`outcome_of`.

Pure: the rules read only the marker types of :mod:`kitsd.core.errors` (and
``TimeoutError``), never a class name table and never what the process imported.
"""

from __future__ import annotations

from abc import get_cache_token

from kitsd.core.errors import NoEndpoints, Rejected

__all__ = [
    "CANCELLED",
    "DEFAULT_SERVICE",
    "ERROR",
    "NO_ENDPOINTS",
    "OUTCOMES",
    "REJECTED",
    "SUCCESS",
    "TIMEOUT",
    "error_type",
    "outcome_of",
]

#: The label of calls made by a stack that was given no ``name=``.
DEFAULT_SERVICE = "default"

SUCCESS = "success"
ERROR = "error"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
REJECTED = "rejected"  # refused before reaching an instance: open breaker, rate limit, budget
NO_ENDPOINTS = "no_endpoints"
OUTCOMES = (SUCCESS, ERROR, TIMEOUT, CANCELLED, REJECTED, NO_ENDPOINTS)

_by_type: dict[type[BaseException], str] = {}  # cache; bounded by the error classes in use
_by_type_token: list[object] = [get_cache_token()]  # the ABC registrations it was built under


def outcome_of(error: BaseException | None) -> str:
    """The outcome label of an ending: :data:`SUCCESS` for ``None``, else one of
    :data:`OUTCOMES`.  A :class:`lb.RetryError` is judged by its ``final`` error.

    The rules, by the marker types of :mod:`kitsd.core.errors` (never by class
    names, never by what the process imported): not an ``Exception``
    (``CancelledError``, ``KeyboardInterrupt``) → :data:`CANCELLED`; a
    :class:`~kitsd.core.errors.NoEndpoints` → :data:`NO_ENDPOINTS`; a
    :class:`~kitsd.core.errors.Rejected` → :data:`REJECTED`; a ``TimeoutError``,
    or a class named ``…Timeout`` / ``…TimeoutException`` (httpx's timeouts
    are not ``TimeoutError``) → :data:`TIMEOUT`; anything else → :data:`ERROR`."""
    if error is None:
        return SUCCESS
    final = getattr(error, "final", None)
    if isinstance(final, BaseException):
        error = final
    kind = type(error)
    token = get_cache_token()
    if token != _by_type_token[0]:  # an ABC registration since: judge afresh
        _by_type.clear()
        _by_type_token[0] = token
    outcome = _by_type.get(kind)
    if outcome is None:
        outcome = _classify(error)
        _by_type[kind] = outcome
    return outcome


def _classify(error: BaseException) -> str:
    if not isinstance(error, Exception):
        return CANCELLED  # asyncio.CancelledError, KeyboardInterrupt, SystemExit ...
    if isinstance(error, NoEndpoints):
        return NO_ENDPOINTS
    if isinstance(error, Rejected):
        return REJECTED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    name = type(error).__name__
    if name.endswith(("Timeout", "TimeoutException")):
        return TIMEOUT  # httpx.TimeoutException and its kin are not TimeoutErrors
    return ERROR


def error_type(error: BaseException | None) -> str:
    """The fully qualified class name of ``error`` (OpenTelemetry's ``error.type``)."""
    if error is None:
        return ""
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}"
    )
