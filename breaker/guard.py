"""Driving a pybreaker ``CircuitBreaker`` without holding its lock during the call.

Theory of operation
-------------------
pybreaker's own ``cb.call(func)`` takes ``cb._lock`` (an ``RLock``) and keeps
it while ``func`` runs, so every call through one breaker waits for the one
before it.  A load-balanced client must not be serialised like that, so kitsd
drives pybreaker's state machine itself, in three short steps:

1. :func:`admit` — under ``cb._lock``: read ``cb.state``.  *Open* and the reset
   timeout (``opened_at`` in the breaker's storage, UTC) not yet elapsed: raise
   ``CircuitBreakerError``.  Elapsed: ``cb.half_open()``.  *Half-open* with the
   trial slot taken: raise ``CircuitBreakerError`` (see below).  Otherwise call
   the listeners' ``before_call(cb, func, request)``, take the trial slot if
   half-open, and hand back a :class:`Ticket` naming the state object that
   admitted the call.  The lock is then released.
2. The caller runs the endpoint, holding no lock.
3. Under ``cb._lock`` again, exactly one of :func:`succeed`, :func:`fail` or
   :func:`abandon` settles the ticket: the first two feed the outcome to the
   admitting state object's ``_handle_success()`` / ``_handle_error(exc,
   reraise=False)`` — which count, notify the listeners and make the
   transitions, exactly as inside ``cb.call`` — and all three release the trial
   slot.

Transitions::

    closed    --fail_max consecutive failures-->  open
    open      --reset_timeout elapsed, next call-->  half-open (that call is the trial)
    half-open --success_threshold successes-->  closed
    half-open --trial fails-->  open

**One trial at a time.**  pybreaker lets one call at a time through a half-open
breaker because it serialises everything.  We do not serialise, so a half-open
breaker admits one trial call; until it is settled, other callers get
``CircuitBreakerError("... half-open trial in progress")`` without reaching the
endpoint.  The slot belongs to the half-open *state object* (a weak set of them,
guarded by each breaker's own lock): a new half-open period gets a fresh slot,
and nothing outlives the breaker.  The rule holds per ``CircuitBreaker`` object
in this process; breakers sharing a storage (Redis) each admit their own trial.

**Stale outcomes.**  pybreaker makes a new state object on every transition.
A call whose admitting state object is no longer current when it finishes had
started before the transition, so its outcome says nothing about the state the
breaker is in now: a slow failure begun while *closed* must not re-open a
breaker that has since tripped and is half-open with a trial of its own, nor
count against a freshly closed one; a slow success begun before the trip must
not close a half-open breaker without a real trial.  Such outcomes drive no
transition and touch no counter; the listeners still hear them (``failure`` for
an error the breaker counts, ``success`` otherwise), as they are cheap and the
listeners' contract is "a call failed/succeeded".

**Locking.**  Only bookkeeping and listener callbacks run under ``cb._lock``,
never the endpoint, so it is safe to use from threads and from an asyncio loop
(the lock is held for microseconds and never across an ``await``).  One caveat:
if other code calls pybreaker's own ``cb.call()`` on the same breaker from a
thread, that thread holds ``cb._lock`` for its whole call and a loop thread
admitting through this module blocks until it returns.  The same goes for a
breaker whose storage is remote (Redis): its reads happen under the lock.

This module imports nothing from threading or asyncio and reads no clock:
:func:`admit` takes ``now``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pybreaker import (
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerState,
)

__all__ = ["TRIAL_IN_PROGRESS", "Ticket", "abandon", "admit", "fail", "succeed"]

logger = logging.getLogger(f"kitsd.{__name__}")

#: Message of the ``CircuitBreakerError`` raised while a half-open trial runs.
TRIAL_IN_PROGRESS = "Circuit breaker half-open, half-open trial in progress"

# Half-open state objects whose trial call is in flight.  An entry is read and
# written only under its own breaker's ``_lock``; breakers with different locks
# touch the set at once only through single add/discard/contains operations,
# which are atomic.  Entries vanish with their state object.
_trials: weakref.WeakSet[CircuitBreakerState] = weakref.WeakSet()


class Ticket:
    """One admitted call: the breaker, the state object that admitted it, and
    whether it holds the half-open trial slot.

    Made by :func:`admit`; settle it exactly once with :func:`succeed`,
    :func:`fail` or :func:`abandon` (a second settle raises ``RuntimeError``).
    """

    __slots__ = ("_settled", "breaker", "state", "trial")

    def __init__(self, breaker: CircuitBreaker, state: CircuitBreakerState, trial: bool) -> None:
        self.breaker = breaker
        self.state = state
        self.trial = trial
        self._settled = False

    def __repr__(self) -> str:
        return (
            f"<Ticket breaker={self.breaker.name!r} state={self.state.name!r}"
            f" trial={self.trial} settled={self._settled}>"
        )

    def _settle(self) -> bool:
        """Mark settled and release the trial slot; return whether the ticket's
        state is still current (the outcome may drive transitions).
        Call under ``breaker._lock``."""
        if self._settled:
            raise RuntimeError(f"{self!r} is already settled")
        self._settled = True
        if self.trial:
            _trials.discard(self.state)
        current = self.breaker.state is self.state
        if not current:
            logger.debug("%r: breaker changed state during the call; outcome not counted", self)
        return current


def admit(
    cb: CircuitBreaker, func: Callable[..., Any], request: Any, *, now: datetime
) -> Ticket:
    """Decide whether a call to ``func(request)`` may go ahead; ``now`` is an
    aware UTC datetime (pybreaker stores ``opened_at`` in UTC).

    Raises ``CircuitBreakerError`` when the breaker is open and its reset
    timeout has not elapsed, or when it is half-open and its one trial call is
    in flight; the endpoint must then not be called.  Otherwise returns the
    :class:`Ticket` to settle once the call is over.  A listener's
    ``before_call`` that raises propagates and admits nothing.  Thread-safe.
    """
    with cb._lock:
        state = cb.state
        if state.name == STATE_OPEN:
            opened_at = cb._state_storage.opened_at
            if opened_at and now < opened_at + timedelta(seconds=cb.reset_timeout):
                raise CircuitBreakerError("Timeout not elapsed yet, circuit breaker still open")
            cb.half_open()
            state = cb.state
        trial = state.name == STATE_HALF_OPEN
        if trial and state in _trials:
            raise CircuitBreakerError(TRIAL_IN_PROGRESS)
        for listener in cb.listeners:
            listener.before_call(cb, func, request)
        if trial:
            _trials.add(state)
        return Ticket(cb, state, trial)


def succeed(ticket: Ticket) -> None:
    """Record that the admitted call returned normally (pybreaker's success path:
    reset the failure count, close a half-open breaker once ``success_threshold``
    is reached, notify ``success`` listeners).  A listener that raises
    propagates.  Thread-safe."""
    cb = ticket.breaker
    with cb._lock:
        if ticket._settle():
            ticket.state._handle_success()
        else:
            for listener in cb.listeners:
                listener.success(cb)


def fail(ticket: Ticket, exc: BaseException) -> BaseException:
    """Record that the admitted call raised ``exc``; return what the caller
    should raise.

    As pybreaker: an error the breaker's ``exclude`` matches counts as a
    success; any other counts as a failure.  When this failure trips the breaker
    and the breaker has ``throw_new_error_on_trip`` (the default), the result
    is a new ``CircuitBreakerError`` whose ``__cause__`` is ``exc``; otherwise
    it is ``exc`` itself.  A listener that raises propagates.  Thread-safe.
    """
    cb = ticket.breaker
    with cb._lock:
        if not ticket._settle():
            system_error = cb.is_system_error(exc)
            for listener in cb.listeners:
                if system_error:
                    listener.failure(cb, exc)
                else:
                    listener.success(cb)
            return exc
        traceback = exc.__traceback__
        try:
            ticket.state._handle_error(exc, reraise=False)
        except CircuitBreakerError as tripped:
            # on_failure opened the breaker and asked for a new error.
            tripped.__cause__ = exc
            return tripped
        except BaseException as raised:
            if raised is not exc:
                raise
            # on_failure re-raised exc (trip without throw_new_error_on_trip);
            # drop the pybreaker frames that re-raise added to its traceback.
            exc.__traceback__ = traceback
        return exc


def abandon(ticket: Ticket) -> None:
    """Settle a call whose end is neither success nor failure (cancelled,
    interrupted): record nothing, notify nobody, release the trial slot so the
    next caller may try.  Thread-safe."""
    with ticket.breaker._lock:
        ticket._settle()
