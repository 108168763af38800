"""The circuit breaker's rules, as a pure state machine over pybreaker's states.

Theory of operation
-------------------
pybreaker's own ``cb.call(func)`` holds the breaker's lock while ``func`` runs,
so every call through one breaker waits for the one before it.  A load-balanced
client must not be serialised like that, so kitsd does not let pybreaker run the
call: it reads the breaker's state, decides here, runs the call holding no lock,
and then decides here what the outcome does to the breaker.  The decisions are
the functions of this module; :mod:`breaker.driver` applies them to the
``pybreaker.CircuitBreaker`` through its public methods (``open()``,
``half_open()``, ``close()``), so listeners and ``cb.current_state`` see every
transition as they would under pybreaker.

A call goes through three steps:

1. **admit** (:func:`admit`): may the call reach the endpoint?
2. the endpoint runs; nothing is held;
3. **settle**: the call's outcome is a *success* (it returned, or raised an
   error the breaker's ``exclude`` matches), a *failure* (any other error), or
   *neutral* (cancelled or interrupted: no verdict on the instance).  A success
   resets the consecutive-failure count and, in half-open, counts towards
   ``success_threshold`` (:func:`on_success`); a failure adds one to it
   (:func:`on_failure`); neutral records nothing.

Transitions (``fail_max``, ``reset_timeout``, ``success_threshold`` are the
breaker's own settings; ``failures``/``successes`` its consecutive counters)::

    state      event                                      next state / answer
    ---------  -----------------------------------------  -------------------------
    closed     admit                                      ADMIT
    closed     success                                    closed (failures = 0)
    closed     failure, failures reach fail_max           open   (trip)
    closed     failure, below fail_max                    closed
    open       admit, now < opened_at + reset_timeout     STILL_OPEN (refused)
    open       admit, reset_timeout elapsed               half-open, TRIAL
    half-open  admit, no trial in flight                  TRIAL
    half-open  admit, the trial in flight                 TRIAL_IN_PROGRESS (refused)
    half-open  success, successes reach threshold         closed
    half-open  success, below threshold                   half-open (next trial may go)
    half-open  failure                                    open   (trip)
    any        outcome of a *stale* call                  no change (listeners only)
    any        neutral outcome                            no change (trial slot freed)

This is pybreaker's table, with two rules pybreaker needs no words for because
it serialises every call:

**One trial at a time.**  A half-open breaker lets one trial call through; until
it is settled, other callers are refused with :data:`TRIAL_IN_PROGRESS` without
reaching the endpoint.  The slot belongs to one half-open *period*: a new
half-open period gets a fresh slot.

**Stale outcomes.**  pybreaker makes a new state object on every transition; the
state object current at admission names the call's *period*.  A call whose period
is no longer current when it settles had started before the transition, so its
outcome says nothing about the breaker's state now: a slow failure begun while
*closed* must not re-open a breaker that has since tripped and is half-open with
a trial of its own, nor count against a freshly closed one; a slow success begun
before the trip must not close a half-open breaker without a real trial.  Such
outcomes drive no transition and touch no counter; the listeners still hear them
(``failure`` for an error the breaker counts, ``success`` otherwise).

Time: ``opened_at`` is pybreaker's (its storage keeps a UTC wall-clock time, which
a Redis storage shares between processes), so the open state is judged on the
wall clock, in seconds since the epoch, as pybreaker judges it.  Only an *open*
breaker needs the time; a closed breaker's calls never read a clock.

This module imports nothing but the standard ``enum`` and pybreaker's state-name
constants; it takes ``now`` as an argument and returns decisions.
"""

from __future__ import annotations

import enum

from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

__all__ = [
    "STILL_OPEN",
    "TRIAL_FAILED",
    "TRIAL_IN_PROGRESS",
    "TRIPPED",
    "Admission",
    "admit",
    "on_failure",
    "on_success",
]

#: Message of the ``CircuitBreakerError`` refusing a call to an open breaker (pybreaker's).
STILL_OPEN = "Timeout not elapsed yet, circuit breaker still open"
#: Message of the ``CircuitBreakerError`` refusing a call while a half-open trial runs.
TRIAL_IN_PROGRESS = "Circuit breaker half-open, half-open trial in progress"
#: Message of the ``CircuitBreakerError`` raised by the failure that trips a closed breaker.
TRIPPED = "Failures threshold reached, circuit breaker opened"
#: Message of the ``CircuitBreakerError`` raised by a failed half-open trial.
TRIAL_FAILED = "Trial call failed, circuit breaker opened"


class Admission(enum.Enum):
    """The answer to "may this call go ahead?"."""

    #: Closed: go ahead.
    ADMIT = "admit"
    #: Half-open and no trial in flight: go ahead as the trial.
    TRIAL = "trial"
    #: Open and the reset timeout has elapsed: move to half-open, then go ahead as its trial.
    HALF_OPEN = "half-open"
    #: Open and the reset timeout has not elapsed: refuse.
    STILL_OPEN = "still-open"
    #: Half-open and its trial is in flight: refuse.
    TRIAL_IN_PROGRESS = "trial-in-progress"

    @property
    def refused(self) -> bool:
        """Whether the call must not reach the endpoint."""
        return self in (Admission.STILL_OPEN, Admission.TRIAL_IN_PROGRESS)


def admit(
    state: str,
    *,
    now: float | None,
    opened_at: float | None,
    reset_timeout: float,
    trial_in_flight: bool,
) -> Admission:
    """Decide whether a call may go ahead in ``state`` (a pybreaker state name).

    ``now`` and ``opened_at`` are seconds since the epoch and matter only when
    ``state`` is open (pass ``None`` otherwise); an open breaker with no
    ``opened_at`` half-opens at once, as pybreaker's does.  ``trial_in_flight``:
    whether the current half-open period's trial is running.  Raises
    ``ValueError`` for a state name pybreaker does not define.
    """
    if state == STATE_CLOSED:
        return Admission.ADMIT
    if state == STATE_HALF_OPEN:
        return Admission.TRIAL_IN_PROGRESS if trial_in_flight else Admission.TRIAL
    if state == STATE_OPEN:
        if opened_at is not None:
            if now is None:
                raise ValueError("an open breaker with opened_at needs now")
            if now < opened_at + reset_timeout:
                return Admission.STILL_OPEN
        return Admission.HALF_OPEN
    raise ValueError(f"unknown breaker state {state!r}")


def on_success(state: str, *, successes: int, success_threshold: int) -> str | None:
    """The state a *current* success moves the breaker to, or ``None`` to stay.

    ``successes``: the half-open success count including this one (the failure
    count is reset by every success, in any state).
    """
    if state == STATE_HALF_OPEN and successes >= success_threshold:
        return STATE_CLOSED
    return None


def on_failure(state: str, *, failures: int, fail_max: int) -> str | None:
    """The state a *current* failure moves the breaker to, or ``None`` to stay.

    ``failures``: the consecutive-failure count including this one.
    """
    if state == STATE_HALF_OPEN or (state == STATE_CLOSED and failures >= fail_max):
        return STATE_OPEN
    return None
