"""Call tracking: what a retry driver reports through (:class:`CallWatch`), and the
name of the stack whose call is running (:func:`current_service`), for what
happens below it (ejections, budget refusals)."""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

from kitsd.core.observe.hub import HUB, emit, emit_started
from kitsd.core.observe.observations import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
)
from kitsd.core.observe.outcomes import DEFAULT_SERVICE, outcome_of

__all__ = ["CallWatch", "current_service", "watch_call"]

_service: ContextVar[str] = ContextVar("kitsd_observed_service", default=DEFAULT_SERVICE)


def current_service() -> str:
    """The ``name=`` of the retry stack whose call is running (set only while someone
    listens), else :data:`DEFAULT_SERVICE`."""
    return _service.get()


class CallWatch:
    """One observed call: what a retry driver reports through.  Made by
    :func:`watch_call` only when someone listens; used from one thread or task."""

    __slots__ = ("_attempt_start", "_token", "attempts", "instance", "service", "start")

    def __init__(self, service: str, start: float) -> None:
        self.service = service
        self.start = start
        self.attempts = 0
        self.instance = ""
        self._attempt_start = -1.0  # -1: no attempt of an instance in flight
        self._token: Token[str] | None = _service.set(service)
        if HUB.starting:
            emit_started(CallStarted(service))

    def attempt(self, instance: str) -> None:
        """An attempt on ``instance`` is about to call its endpoint."""
        self.instance = instance
        self._attempt_start = time.monotonic()
        if HUB.starting:
            emit_started(AttemptStarted(self.service, instance, self.attempts))

    def attempt_ended(self, error: BaseException | None) -> None:
        """The attempt (or the pick before it, if :meth:`attempt` was not called)
        ended; ``error`` ``None``: it succeeded."""
        self.attempts += 1
        started, self._attempt_start = self._attempt_start, -1.0
        if started >= 0:
            emit(AttemptFinished(self.service, self.instance, outcome_of(error),
                                 time.monotonic() - started, self.attempts - 1, error),
                 finished=True)

    def finished(self, error: BaseException | None) -> None:
        """The call ended (``error``: what the caller gets).  Idempotent."""
        token, self._token = self._token, None
        if token is None:
            return
        if self._attempt_start >= 0:  # interrupted mid-attempt (cancelled, timed out)
            self.attempt_ended(error)
        emit(CallFinished(self.service, outcome_of(error), time.monotonic() - self.start,
                          self.attempts, self.instance, error), finished=True)
        # not contextlib.suppress: three more frames on every observed call
        try:  # noqa: SIM105
            _service.reset(token)
        except ValueError:  # finished in another context: nothing to undo
            pass


def watch_call(service: str, start: float) -> CallWatch | None:
    """A :class:`CallWatch` for a call that began at ``start`` (``time.monotonic()``),
    or ``None`` when nobody listens (the caller then reports nothing)."""
    if not HUB.observers:
        return None
    return CallWatch(service, start)
