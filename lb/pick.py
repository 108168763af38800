"""What every balancer shares: skipping instances that failed, within one call and across calls.

:func:`usable` narrows an endpoint list to the ones worth picking now: it drops
endpoints that already failed earlier in the current :func:`lb.retry` call
(while others remain) and endpoints passively ejected after a connection-level
failure (within the table's cap).  :func:`lb.retry` reports outcomes with
:func:`record_failure` / :func:`record_success`; balancers need no wiring.

The ejection table is process-wide and keyed by endpoint identity, so two
balancers over one Endpointer share what they learn.  Replace or disable it with
:func:`set_ejection_table` (``None`` disables passive ejection).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar, Token
from typing import TypeVar

from lb.balancer import EndpointSource
from lb.ejection import EjectionTable
from lb.errors import NoEndpointsError
from sd.endpoint import Endpoint
from sd.errors import ConnectionFailure

__all__ = [
    "candidates",
    "ejection_table",
    "failed_in_call",
    "record_failure",
    "record_success",
    "set_ejection_table",
    "usable",
]

E = TypeVar("E")

_lock = threading.Lock()
_table: EjectionTable | None = EjectionTable()
_failed_in_call: ContextVar[frozenset[int]] = ContextVar(
    "kitsd_failed_in_call", default=frozenset()
)


def usable(endpoints: Sequence[E]) -> Sequence[E]:
    """The subset of ``endpoints`` a balancer should pick from now (never empty if
    ``endpoints`` is not).  Cheap when nothing has failed."""
    exclude = _failed_in_call.get()
    table = _table
    if not exclude and (table is None or table.empty):
        return endpoints
    if table is None:
        kept = [e for e in endpoints if id(e) not in exclude]
        return kept or endpoints
    with _lock:
        return table.usable(endpoints, time.monotonic(), exclude)


def candidates(source: EndpointSource) -> Sequence[Endpoint]:
    """``source``'s endpoints narrowed by :func:`usable`: what a balancer picks from.

    Raises :class:`lb.NoEndpointsError` on an empty set; ``source``'s own error
    passes through unchanged.
    """
    endpoints = source.endpoints()
    if not endpoints:
        raise NoEndpointsError
    return usable(endpoints)


def failed_in_call() -> frozenset[int]:
    """Identities of the endpoints that failed earlier in the current retry call."""
    return _failed_in_call.get()


def mark_failed_in_call(endpoint: object) -> Token[frozenset[int]]:
    """Add ``endpoint`` to the current call's failures; returns a reset token."""
    return _failed_in_call.set(_failed_in_call.get() | {id(endpoint)})


def reset_failed_in_call(token: Token[frozenset[int]]) -> None:
    """Undo :func:`mark_failed_in_call`."""
    _failed_in_call.reset(token)


def record_failure(endpoint: object, error: BaseException) -> bool:
    """Eject ``endpoint`` if ``error`` is connection-level; returns whether it did."""
    table = _table
    if table is None or not isinstance(error, ConnectionFailure):
        return False
    with _lock:
        table.eject(endpoint, time.monotonic())
    return True


def record_success(endpoint: object) -> None:
    """``endpoint`` answered: clear its strikes (cheap when nothing is ejected)."""
    table = _table
    if table is not None and not table.empty:
        with _lock:
            table.succeeded(endpoint)


def ejection_table() -> EjectionTable | None:
    """The process-wide ejection table (``None`` when disabled)."""
    return _table


def set_ejection_table(table: EjectionTable | None) -> EjectionTable | None:
    """Replace the process-wide ejection table (``None`` disables); returns the old one."""
    global _table
    with _lock:
        old, _table = _table, table
    return old
