"""The bookkeeping core, driven directly with an explicit ``now``."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pybreaker
import pytest

from breaker import guard
from tests.breaker.test_circuit_breaker import Boom, Recorder


def func(request: Any) -> Any:
    return request


NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_guard_imports_no_threading_or_asyncio() -> None:
    tree = ast.parse(Path(guard.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported
    assert not imported & {"threading", "asyncio", "time", "socket", "concurrent"}


def test_open_breaker_admits_by_the_given_now() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=30)
    cb.open()
    cb._state_storage.opened_at = NOW
    for seconds in (0, 10, 29.9):
        with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
            guard.admit(cb, func, None, now=NOW + timedelta(seconds=seconds))
    assert cb.current_state == pybreaker.STATE_OPEN

    ticket = guard.admit(cb, func, None, now=NOW + timedelta(seconds=30))
    assert ticket.trial
    assert ticket.state is cb.state
    assert cb.current_state == pybreaker.STATE_HALF_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError, match=guard.TRIAL_IN_PROGRESS):
        guard.admit(cb, func, None, now=NOW + timedelta(seconds=31))
    guard.succeed(ticket)
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_a_ticket_settles_once() -> None:
    cb = pybreaker.CircuitBreaker()
    ticket = guard.admit(cb, func, None, now=NOW)
    assert not ticket.trial
    guard.succeed(ticket)
    for settle in (guard.succeed, guard.abandon, lambda t: guard.fail(t, Boom())):
        with pytest.raises(RuntimeError, match="already settled"):
            settle(ticket)


def test_fail_returns_the_trip_error_chained_to_the_cause() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2)
    first, second = (guard.admit(cb, func, None, now=NOW) for _ in range(2))
    error = Boom()
    assert guard.fail(first, error) is error
    tripped = guard.fail(second, error)
    assert isinstance(tripped, pybreaker.CircuitBreakerError)
    assert tripped.__cause__ is error
    assert cb.current_state == pybreaker.STATE_OPEN


def test_stale_outcomes_reach_listeners_only() -> None:
    recorder = Recorder()
    cb = pybreaker.CircuitBreaker(fail_max=1, listeners=[recorder], exclude=[KeyError])
    stale = [guard.admit(cb, func, n, now=NOW) for n in range(3)]
    cb.open()
    cb.close()  # a fresh closed state: the three tickets are stale
    recorder.events.clear()
    assert isinstance(guard.fail(stale[0], Boom()), Boom)  # no trip, its own error
    assert isinstance(guard.fail(stale[1], KeyError()), KeyError)
    guard.succeed(stale[2])
    assert recorder.events == [("failure", "Boom"), ("success",), ("success",)]
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0


def test_a_new_half_open_period_has_a_fresh_trial_slot() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0)
    cb.half_open()
    old = guard.admit(cb, func, None, now=NOW)
    assert old.trial
    cb.half_open()  # a new state object, e.g. another process moved the breaker
    new = guard.admit(cb, func, None, now=NOW)
    assert new.trial
    guard.abandon(old)  # stale: must not free the new period's slot
    with pytest.raises(pybreaker.CircuitBreakerError, match=guard.TRIAL_IN_PROGRESS):
        guard.admit(cb, func, None, now=NOW)
    guard.abandon(new)
    guard.succeed(guard.admit(cb, func, None, now=NOW))
    assert cb.current_state == pybreaker.STATE_CLOSED
