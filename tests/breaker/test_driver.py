"""The driver (breaker.driver), driven directly with an explicit ``now``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pybreaker
import pytest

from kitsd.breaker import driver_policy
from kitsd.breaker._pybreaker import storage_of
from kitsd.breaker.driver import Driver, driver_for
from tests.breaker.test_middleware import Boom, Recorder


def func(request: Any) -> Any:
    return request


OPENED = datetime(2030, 1, 1, tzinfo=UTC)
NOW = OPENED.timestamp()


def no_clock() -> float:
    raise AssertionError("the clock was read")


def test_open_breaker_admits_by_the_given_now() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=30)
    driver = Driver(cb, clock=no_clock)
    cb.open()
    storage_of(cb).opened_at = OPENED
    for seconds in (0, 10, 29.9):
        with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
            driver.admit(cb, func, None, now=NOW + seconds)
    assert cb.current_state == pybreaker.STATE_OPEN

    ticket = driver.admit(cb, func, None, now=NOW + 30)
    assert ticket.trial
    assert ticket.period is cb.state
    assert cb.current_state == pybreaker.STATE_HALF_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError, match=driver_policy.TRIAL_IN_PROGRESS):
        driver.admit(cb, func, None, now=NOW + 31)
    driver.succeed(cb, ticket)
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_only_an_open_breaker_reads_the_clock() -> None:
    readings: list[float] = []

    def clock() -> float:
        readings.append(NOW)
        return NOW

    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=30, listeners=[Recorder()])
    driver = Driver(cb, clock=clock)
    driver.succeed(cb, driver.admit(cb, func, None))
    assert driver.fail(cb, driver.admit(cb, func, None), Boom()) is not None
    cb.half_open()
    driver.succeed(cb, driver.admit(cb, func, None))
    assert readings == []
    cb.open()
    storage_of(cb).opened_at = OPENED
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        driver.admit(cb, func, None)
    assert readings == [NOW]


def test_a_ticket_settles_once() -> None:
    cb = pybreaker.CircuitBreaker()
    driver = Driver(cb)
    ticket = driver.admit(cb, func, None)
    assert not ticket.trial
    driver.succeed(cb, ticket)
    for settle in (
        lambda t: driver.succeed(cb, t),
        lambda t: driver.abandon(cb, t),
        lambda t: driver.fail(cb, t, Boom()),
    ):
        with pytest.raises(RuntimeError, match="already settled"):
            settle(ticket)


def test_fail_returns_the_trip_error_chained_to_the_cause() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2)
    driver = Driver(cb)
    first, second = (driver.admit(cb, func, None) for _ in range(2))
    error = Boom()
    assert driver.fail(cb, first, error) is error
    tripped = driver.fail(cb, second, error)
    assert isinstance(tripped, pybreaker.CircuitBreakerError)
    assert str(tripped) == driver_policy.TRIPPED
    assert tripped.__cause__ is error
    assert cb.current_state == pybreaker.STATE_OPEN


def test_stale_outcomes_reach_listeners_only() -> None:
    recorder = Recorder()
    cb = pybreaker.CircuitBreaker(fail_max=1, listeners=[recorder], exclude=[KeyError])
    driver = Driver(cb)
    stale = [driver.admit(cb, func, n) for n in range(3)]
    cb.open()
    cb.close()  # a fresh closed state: the three tickets are stale
    recorder.events.clear()
    assert isinstance(driver.fail(cb, stale[0], Boom()), Boom)  # no trip, its own error
    assert isinstance(driver.fail(cb, stale[1], KeyError()), KeyError)
    driver.succeed(cb, stale[2])
    assert recorder.events == [("failure", "Boom"), ("success",), ("success",)]
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0


def test_a_quiet_stale_success_leaves_the_new_period_count_alone() -> None:
    # A success admitted before a transition takes the lock-free path only when the
    # failure count reads 0; otherwise it must find out it is stale, not reset the
    # count of the period that replaced its own.
    cb = pybreaker.CircuitBreaker(fail_max=3)
    driver = Driver(cb)
    stale = driver.admit(cb, func, None)
    assert stale.quiet
    cb.open()
    cb.close()
    assert driver.fail(cb, driver.admit(cb, func, None), Boom()) is not None
    assert cb.fail_counter == 1
    driver.succeed(cb, stale)
    assert cb.fail_counter == 1
    driver.succeed(cb, driver.admit(cb, func, None))  # a current one does reset it
    assert cb.fail_counter == 0


def test_a_new_half_open_period_has_a_fresh_trial_slot() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0)
    driver = Driver(cb)
    cb.half_open()
    old = driver.admit(cb, func, None, now=NOW)
    assert old.trial
    cb.half_open()  # a new state object, e.g. another process moved the breaker
    new = driver.admit(cb, func, None, now=NOW)
    assert new.trial
    driver.abandon(cb, old)  # stale: must not free the new period's slot
    with pytest.raises(pybreaker.CircuitBreakerError, match=driver_policy.TRIAL_IN_PROGRESS):
        driver.admit(cb, func, None, now=NOW)
    driver.abandon(cb, new)
    driver.succeed(cb, driver.admit(cb, func, None, now=NOW))
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_one_driver_per_breaker_for_as_long_as_it_lives() -> None:
    import gc
    import weakref

    cb = pybreaker.CircuitBreaker()
    driver = driver_for(cb)
    assert driver_for(cb) is driver
    assert driver_for(pybreaker.CircuitBreaker()) is not driver
    gone = weakref.ref(cb)
    gone_driver = weakref.ref(driver)
    del cb, driver
    gc.collect()
    assert gone() is None
    assert gone_driver() is None
