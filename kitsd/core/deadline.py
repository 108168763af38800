"""The deadline of the current retry, as a context variable.

:func:`lb.retry` sets it around each attempt; :func:`remaining` reads it.  It
lives in the core so that endpoints (``sd.http``, ``sd.grpc``) can bound their
requests by it without importing ``lb``.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

__all__ = ["current_deadline", "remaining", "reset_deadline", "set_deadline"]

_deadline: ContextVar[float | None] = ContextVar("kitsd_deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the enclosing retry's timeout or ``lb.deadline`` block
    (never negative), or ``None`` outside both: outside an attempt made by
    :func:`lb.retry` / :func:`lb.retry_async` and any ``with lb.deadline(...)``."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def current_deadline() -> float | None:
    """The enclosing retry's deadline on the ``time.monotonic()`` clock, or ``None``."""
    return _deadline.get()


def set_deadline(deadline: float | None) -> Token[float | None]:
    """Set the deadline (monotonic seconds) for the current context; returns a reset token."""
    return _deadline.set(deadline)


def reset_deadline(token: Token[float | None]) -> None:
    """Undo :func:`set_deadline`."""
    _deadline.reset(token)
