"""A per-call deadline: ``with lb.deadline(seconds):``.

A retrying endpoint is built once with its ``timeout``; a caller that has less
time for one call (an HTTP request's own timeout, what is left of an incoming
request's deadline) says so around the call, as with ``asyncio.timeout`` or
trio's ``fail_after``, rather than building another endpoint::

    call = lb.retry(3, 10.0, balancer)
    with lb.deadline(0.5):
        call(request)          # its attempts together get 0.5 s, not 10 s

Deadlines nest and only ever shorten: a call's deadline is the earliest of its
endpoint's ``timeout`` and every enclosing ``lb.deadline`` (and, for a retried
call made inside an attempt of another, that attempt's deadline: deadlines
propagate, as gRPC's do).  The block itself is not interrupted: what it bounds is
every :func:`lb.retry` / :func:`lb.retry_async` call made in it (past the deadline
they raise :class:`lb.RetryTimeout`; the asyncio driver also cancels the attempt
in flight), and every endpoint that reads :func:`lb.remaining` (``sd.http``,
``sd.grpc``, ``sd.thrift``), which inside the block is the time left.

The deadline is a context variable: it follows the code into the tasks it
starts (``asyncio.create_task`` copies the context) but not into threads it
starts (``contextvars.copy_context().run`` carries it there).
"""

from __future__ import annotations

import time
from contextvars import Token
from types import TracebackType

from kitsd.core import validate
from kitsd.core.deadline import current_deadline, reset_deadline, set_deadline

__all__ = ["Deadline", "deadline"]


class Deadline:
    """The context manager :func:`deadline` returns; reusable, not reentrant.

    ``at`` is the deadline on the ``time.monotonic()`` clock while the block runs
    (``None`` outside it)."""

    __slots__ = ("_seconds", "_token", "at")

    def __init__(self, seconds: float) -> None:
        self._seconds = validate.number("seconds", seconds, unit="seconds")  # <= 0: expired
        self._token: Token[float | None] | None = None
        self.at: float | None = None

    def __enter__(self) -> Deadline:
        if self._token is not None:
            raise RuntimeError("lb.deadline: this block is already entered")
        at = time.monotonic() + self._seconds
        outer = current_deadline()
        if outer is not None and outer < at:
            at = outer
        self.at = at
        self._token = set_deadline(at)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        self.at = None
        if token is not None:
            reset_deadline(token)

    def __repr__(self) -> str:
        return f"lb.deadline({self._seconds!r})"


def deadline(seconds: float) -> Deadline:
    """Bound every retried call made in the ``with`` block by ``seconds`` from its
    start (see the module docstring): ``with lb.deadline(0.5): call(request)``.

    Only shortens: an enclosing deadline, or the endpoint's own ``timeout``, that
    comes earlier still wins.  ``seconds <= 0`` means already expired: a retried
    call made in the block raises :class:`lb.RetryTimeout` without an attempt.
    Works the same in threads and in asyncio tasks (a context variable).  Raises
    ``TypeError`` for a non-number and :class:`sd.MisuseError` for NaN or
    infinity.
    """
    return Deadline(seconds)
