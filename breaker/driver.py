"""Applying :mod:`breaker.driver_policy`'s rules to a ``pybreaker.CircuitBreaker``.

A :class:`Driver` belongs to one ``CircuitBreaker`` (:func:`driver_for` makes
it on first use and hands the same one to every endpoint wrapped with that
breaker; it goes when the breaker goes).  It admits a call (:meth:`Driver.admit`
returns a :class:`Ticket`) and settles it once the call is over
(:meth:`~Driver.succeed`, :meth:`~Driver.fail` or :meth:`~Driver.abandon`),
moving the breaker through its public ``open()``, ``half_open()`` and
``close()``, notifying its listeners in pybreaker's order, and keeping its
counters (see :mod:`breaker._pybreaker` for the one private access this takes).

Locking
-------
Each driver has its own re-entrant lock, never held while the endpoint runs.
Under it: every change to the breaker (counters, transitions), the half-open
trial slot, and every listener callback, so one breaker's listeners never run
two at a time, as under pybreaker.  A breaker *without listeners* (the
per-instance breakers of a load-balanced client) in the closed state costs no
lock at all:

- admitting a call to a closed breaker only reads ``cb.state`` (the listeners'
  ``before_call``, if any, is the only thing done under the lock);
- a success of a call admitted while closed, when the breaker's failure count
  reads 0, changes nothing, and is correct as if it had happened at the instant
  the count was read: if the call's period was current then, the success resets
  a count that is already 0; if it was stale, a stale outcome changes nothing.
  Either way only the listeners hear of it, and without listeners it is done
  without the lock.  Any other success takes the lock and finds out there
  whether its period is current, so a stale success never resets the count of
  the period that replaced its own.

Failures always take the lock, so the count and the trip are one step: under
concurrent failures the breaker trips exactly once, and the failures that end
after the trip are stale (see :mod:`breaker.driver_policy`).

The lock is held for microseconds and never across an ``await``, so the
driver is safe from threads and from an asyncio loop.  One caveat: a
transition calls the breaker's ``open()``/``half_open()``/``close()``, which take
pybreaker's own lock; if other code runs pybreaker's ``cb.call()`` on the same
breaker in another thread, that thread holds pybreaker's lock for its whole
call, and a transition here waits for it.  The same goes for a breaker whose
storage is remote (Redis): its reads and writes are network calls.

Clock: an *open* breaker is judged on the wall clock (``time.time``), because
pybreaker's ``opened_at`` is a wall-clock time; a closed or half-open breaker
reads no clock.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from pybreaker import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerState,
)

from kitsd.breaker import driver_policy
from kitsd.breaker._pybreaker import storage_of
from kitsd.breaker.driver_policy import Admission
from kitsd.breaker.errors import CircuitOpenError
from kitsd.core.observe import HUB, BreakerStateChanged, emit

__all__ = ["Driver", "Ticket", "driver_for"]


class Ticket:
    """One admitted call: the breaker state object (*period*) that admitted it,
    whether it is that half-open period's trial, and whether the breaker had no
    listeners when it was admitted (*quiet*).  A listener added while a call is in
    flight may not hear that call's outcome (under pybreaker it could not be added
    before the call ends: ``cb.call`` holds the lock that ``add_listener`` takes).

    Made by :meth:`Driver.admit`; settle it exactly once (a second settle raises
    ``RuntimeError``).
    """

    __slots__ = ("period", "quiet", "settled", "trial")

    def __init__(self, period: CircuitBreakerState, trial: bool, quiet: bool) -> None:
        self.period = period
        self.trial = trial
        self.quiet = quiet
        self.settled = False

    def __repr__(self) -> str:
        return (
            f"<Ticket period={self.period.name!r} trial={self.trial} quiet={self.quiet}"
            f" settled={self.settled}>"
        )

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"{self!r} is already settled")
        self.settled = True


class Driver:
    """Admits and settles calls through one ``CircuitBreaker``; thread-safe.

    Every method takes the breaker ``cb`` it was made for: the driver keeps no
    reference to it (but through the state object of a trial in flight), so the
    table of drivers, keyed weakly by breaker, lets both go together.
    ``clock`` gives seconds since the epoch (default ``time.time``); it is read
    only while the breaker is open.
    """

    __slots__ = ("__weakref__", "_clock", "_lock", "_storage", "_trial")

    def __init__(self, cb: CircuitBreaker, *, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.RLock()
        self._storage = storage_of(cb)
        self._clock = clock
        # The half-open state object whose trial is in flight; under _lock.
        self._trial: CircuitBreakerState | None = None

    def admit(
        self,
        cb: CircuitBreaker,
        func: Callable[..., Any],
        request: Any,
        *,
        now: float | None = None,
    ) -> Ticket:
        """Decide whether ``func(request)`` may be called; ``now`` (seconds since the
        epoch) overrides the clock when the breaker is open.

        Raises :class:`~kitsd.breaker.errors.CircuitOpenError` (a
        ``CircuitBreakerError``) when the breaker is open and its reset timeout has
        not elapsed, or half-open with its trial in flight; the endpoint must then
        not be called.  Otherwise calls the listeners'
        ``before_call(cb, func, request)`` and returns the :class:`Ticket` to
        settle.  A ``before_call`` that raises propagates and admits nothing.
        """
        period = cb.state
        if period.name == STATE_CLOSED:  # driver_policy's first row: a closed breaker admits
            listeners = cb.listeners
            if not listeners:
                return Ticket(period, False, True)
            with self._lock:
                for listener in listeners:
                    listener.before_call(cb, func, request)
            return Ticket(period, False, False)
        return self._admit_by_the_rules(cb, func, request, now)

    def _admit_by_the_rules(
        self, cb: CircuitBreaker, func: Callable[..., Any], request: Any, now: float | None
    ) -> Ticket:
        """:meth:`admit` for a breaker that was not closed when looked at."""
        with self._lock:
            period = cb.state
            name = period.name
            opened_at: float | None = None
            if name == STATE_OPEN:
                stored = self._storage.opened_at
                if stored is not None:
                    opened_at = stored.timestamp()
                    if now is None:
                        now = self._clock()
            decision = driver_policy.admit(
                name,
                now=now,
                opened_at=opened_at,
                reset_timeout=cb.reset_timeout,
                trial_in_flight=self._trial is period,
            )
            if decision is Admission.STILL_OPEN:
                raise CircuitOpenError(driver_policy.STILL_OPEN)
            if decision is Admission.TRIAL_IN_PROGRESS:
                raise CircuitOpenError(driver_policy.TRIAL_IN_PROGRESS)
            if decision is Admission.HALF_OPEN:
                cb.half_open()
                period = cb.state
                _changed(cb, STATE_OPEN, STATE_HALF_OPEN)  # kitsd.observe
            listeners = cb.listeners
            for listener in listeners:
                listener.before_call(cb, func, request)
            trial = decision is not Admission.ADMIT
            if trial:
                self._trial = period
            return Ticket(period, trial, not listeners)

    def succeed(self, cb: CircuitBreaker, ticket: Ticket) -> None:
        """Record that the admitted call returned (pybreaker's success: reset the
        failure count, close a half-open breaker once ``success_threshold`` is
        reached, notify ``success`` listeners).  A listener that raises
        propagates."""
        ticket._settle()
        if ticket.quiet and not ticket.trial and self._storage.counter == 0:
            return  # nothing to change, nobody to tell: see the module doc
        with self._lock:
            if not ticket.trial and self._storage.counter == 0:
                # Nothing to reset, whether the period is current or stale: only tell.
                for heard in cb.listeners:
                    heard.success(cb)
            elif self._release(cb, ticket):
                self._success(cb, ticket.period)
            else:
                for listener in cb.listeners:
                    listener.success(cb)

    def fail(self, cb: CircuitBreaker, ticket: Ticket, exc: BaseException) -> BaseException:
        """Record that the admitted call raised ``exc``; return what the caller
        should raise.

        As pybreaker: an error ``cb.is_system_error`` clears (its ``exclude``)
        counts as a success; any other counts as a failure.  When this failure
        trips the breaker and ``cb.open()`` asks for a new error
        (``throw_new_error_on_trip``, the default), the result is a new
        ``CircuitBreakerError`` whose ``__cause__`` is ``exc``; otherwise it is
        ``exc`` itself.  A listener that raises propagates.
        """
        ticket._settle()
        with self._lock:
            current = self._release(cb, ticket)
            system_error = cb.is_system_error(exc)
            if not current:
                for listener in cb.listeners:
                    if system_error:
                        listener.failure(cb, exc)
                    else:
                        listener.success(cb)
                return exc
            if not system_error:
                self._success(cb, ticket.period)
                return exc
            self._storage.increment_counter()
            for heard in cb.listeners:
                heard.failure(cb, exc)
            name = ticket.period.name
            target = driver_policy.on_failure(name, failures=cb.fail_counter, fail_max=cb.fail_max)
            if target != STATE_OPEN:
                return exc
            raise_anew = cb.open()  # open() says whether to raise anew
            _changed(cb, name, STATE_OPEN)  # kitsd.observe
            if not raise_anew:
                return exc
            tripped = CircuitBreakerError(
                driver_policy.TRIAL_FAILED if name == STATE_HALF_OPEN else driver_policy.TRIPPED
            )
            tripped.__cause__ = exc
            return tripped

    def abandon(self, cb: CircuitBreaker, ticket: Ticket) -> None:
        """Settle a call whose end is neither success nor failure (cancelled,
        interrupted): record nothing, notify nobody, free the trial slot so the
        next caller may try."""
        ticket._settle()
        if ticket.trial:
            with self._lock:
                self._release(cb, ticket)

    def _release(self, cb: CircuitBreaker, ticket: Ticket) -> bool:
        """Free the ticket's trial slot; return whether its period is current.
        Under ``_lock``."""
        if ticket.trial and self._trial is ticket.period:
            self._trial = None
        return cb.state is ticket.period

    def _success(self, cb: CircuitBreaker, period: CircuitBreakerState) -> None:
        """pybreaker's success path for a current period.  Under ``_lock``."""
        self._storage.reset_counter()
        if period.name == STATE_HALF_OPEN:
            self._storage.increment_success_counter()
            target = driver_policy.on_success(
                STATE_HALF_OPEN,
                successes=cb.success_counter,
                success_threshold=cb.success_threshold,
            )
            if target == STATE_CLOSED:
                cb.close()
                _changed(cb, STATE_HALF_OPEN, STATE_CLOSED)  # kitsd.observe
        for listener in cb.listeners:
            listener.success(cb)


# One driver per breaker, for as long as the breaker lives.
_drivers: weakref.WeakKeyDictionary[CircuitBreaker, Driver] = weakref.WeakKeyDictionary()
_drivers_lock = threading.Lock()


def driver_for(cb: CircuitBreaker) -> Driver:
    """The driver of ``cb``, made on first use; the same object for every caller.

    Raises ``RuntimeError`` if the installed pybreaker does not keep its state
    where kitsd expects (see :mod:`breaker._pybreaker`).
    """
    with _drivers_lock:
        driver = _drivers.get(cb)
        if driver is None:
            driver = _drivers[cb] = Driver(cb)
            first_seen = True
        else:
            first_seen = False
    if first_seen:
        _changed(cb, None, cb.current_state)  # kitsd.observe
    return driver


def _changed(cb: CircuitBreaker, old: str | None, new: str) -> None:
    """kitsd.observe: report a transition (``old`` ``None``: a breaker first seen)."""
    if HUB.observers:
        emit(BreakerStateChanged(cb.name or "unnamed", old, new, cb))
