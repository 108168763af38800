"""lb.retry_policy: the pure retry decisions, driven with explicit ``now``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math

import pytest

from kitsd import lb
from kitsd.lb import RetryError, RetryTimeout
from kitsd.lb.retry_policy import GiveUp, Retry, RetryCall, validate


def test_imports_nothing_that_blocks_or_reads_a_clock() -> None:
    tree = ast.parse(inspect.getsource(lb.retry_policy))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "tenacity"}), imported


@pytest.mark.parametrize(("max_attempts", "timeout"), [(1, 0.001), (3, 1), (10**6, 3600.0)])
def test_validate_accepts_usable_settings(max_attempts: int, timeout: float) -> None:
    validate(max_attempts, timeout)


@pytest.mark.parametrize(
    ("max_attempts", "timeout", "error"),
    [
        (0, 1.0, ValueError),
        (-1, 1.0, ValueError),
        (3, 0.0, ValueError),
        (3, -1.0, ValueError),
        (3, math.nan, ValueError),
        (1.5, 1.0, TypeError),
        ("3", 1.0, TypeError),
        (True, 1.0, TypeError),
        (None, 1.0, TypeError),
        (3, "1", TypeError),
        (3, None, TypeError),
    ],
)
def test_validate_rejects(max_attempts: object, timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate(max_attempts, timeout)  # type: ignore[arg-type]


def test_decisions_are_frozen_values() -> None:
    assert Retry(0.5) == Retry(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Retry(0.5).delay = 1.0  # type: ignore[misc]


def test_default_rule_retries_until_max_attempts() -> None:
    call = RetryCall(max_attempts=3, timeout=10.0, start=100.0)
    errors = [ValueError("one"), ValueError("two"), ValueError("three")]
    assert call.failed(errors[0], now=100.1) == Retry(0.0)
    assert call.attempt == 1
    assert call.failed(errors[1], now=100.2) == Retry(0.0)
    decision = call.failed(errors[2], now=100.3)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RetryError)
    assert decision.error.errors == errors
    assert decision.error.final is errors[2]
    assert str(decision.error) == "three (previously: one; two)"
    assert call.attempt == 3


def test_one_attempt_gives_up_at_once() -> None:
    call = RetryCall(max_attempts=1, timeout=1.0, start=0.0)
    error = KeyError("k")
    decision = call.failed(error, now=0.0)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RetryError)
    assert decision.error.errors == [error]
    assert decision.error.final is error


def test_deadline_wins_over_remaining_attempts() -> None:
    consulted: list[int] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        consulted.append(attempt)
        return True, None

    call = RetryCall(max_attempts=100, timeout=2.0, start=10.0, callback=callback)
    first, second = OSError("first"), OSError("second")
    assert call.failed(first, now=11.0) == Retry(0.0)
    decision = call.failed(second, now=12.0)  # exactly at the deadline
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RetryTimeout)
    assert decision.error.errors == [first, second]
    assert decision.error.timeout == 2.0
    assert consulted == [1]


def test_callback_replaces_the_default_rule() -> None:
    seen: list[tuple[int, BaseException]] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        seen.append((attempt, error))
        return attempt < 5, None

    call = RetryCall(max_attempts=2, timeout=10.0, start=0.0, callback=callback)
    errors = [ValueError(str(n)) for n in range(5)]
    decisions = [call.failed(error, now=0.0) for error in errors]
    assert decisions[:4] == [Retry(0.0)] * 4
    assert isinstance(decisions[4], GiveUp)
    assert [attempt for attempt, _ in seen] == [1, 2, 3, 4, 5]
    assert all(got is sent for (_, got), sent in zip(seen, errors, strict=True))


def test_callback_replacement_becomes_final() -> None:
    class MyError(Exception):
        pass

    mine = MyError("aborting early")
    call = RetryCall(max_attempts=5, timeout=10.0, start=0.0,
                     callback=lambda attempt, error: (False, mine))
    raw = ValueError("raw")
    decision = call.failed(raw, now=0.0)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RetryError)
    assert decision.error.final is mine
    assert decision.error.errors == [raw]
    assert str(decision.error) == "aborting early"


def test_replacement_is_ignored_while_keeping_on() -> None:
    call = RetryCall(max_attempts=5, timeout=10.0, start=0.0,
                     callback=lambda attempt, error: (True, RuntimeError("ignored")))
    assert call.failed(ValueError("x"), now=0.0) == Retry(0.0)


def test_wait_sees_attempt_error_and_elapsed() -> None:
    seen: list[tuple[int, BaseException, float]] = []

    def wait(attempt: int, error: BaseException, elapsed: float) -> float:
        seen.append((attempt, error, elapsed))
        return 0.25 * attempt

    call = RetryCall(max_attempts=4, timeout=10.0, start=50.0, wait=wait)
    errors = [ValueError("a"), ValueError("b"), ValueError("c")]
    assert call.failed(errors[0], now=50.5) == Retry(0.25)
    assert call.failed(errors[1], now=51.0) == Retry(0.5)
    assert call.failed(errors[2], now=52.0) == Retry(0.75)
    assert [(a, e) for a, e, _ in seen] == list(zip([1, 2, 3], errors, strict=True))
    assert [elapsed for _, _, elapsed in seen] == pytest.approx([0.5, 1.0, 2.0])


def test_wait_is_not_consulted_when_giving_up() -> None:
    calls: list[int] = []

    def wait(attempt: int, error: BaseException, elapsed: float) -> float:
        calls.append(attempt)
        return 0.0

    call = RetryCall(max_attempts=2, timeout=10.0, start=0.0, wait=wait)
    call.failed(ValueError("a"), now=0.0)
    assert isinstance(call.failed(ValueError("b"), now=0.0), GiveUp)
    assert calls == [1]


def test_negative_wait_means_no_wait() -> None:
    call = RetryCall(max_attempts=3, timeout=10.0, start=0.0, wait=lambda *args: -5.0)
    assert call.failed(ValueError("a"), now=1.0) == Retry(0.0)


def test_wait_reaching_the_deadline_gives_up_with_timeout() -> None:
    call = RetryCall(max_attempts=10, timeout=1.0, start=0.0, wait=lambda *args: 0.4)
    first, second = ValueError("first"), ValueError("second")
    assert call.failed(first, now=0.1) == Retry(0.4)  # 0.5 < 1.0: fits
    decision = call.failed(second, now=0.6)  # 0.6 + 0.4 reaches the deadline
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RetryTimeout)
    assert decision.error.errors == [first, second]


def test_timed_out_carries_the_errors_so_far() -> None:
    call = RetryCall(max_attempts=3, timeout=0.5, start=0.0)
    assert call.timed_out().errors == []
    error = ValueError("x")
    call.failed(error, now=0.0)
    timeout = call.timed_out()
    assert isinstance(timeout, TimeoutError)
    assert timeout.errors == [error]
    assert call.deadline == 0.5
    assert call.start == 0.0
