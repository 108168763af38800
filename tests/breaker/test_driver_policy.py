"""The breaker's rules (breaker.driver_policy), a pure state machine, checked against its table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from kitsd.breaker import driver_policy
from kitsd.breaker.driver_policy import Admission

OPENED = 1_000.0


def test_guard_imports_no_threading_asyncio_or_clock() -> None:
    tree = ast.parse(Path(driver_policy.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported
    assert not imported & {"threading", "asyncio", "time", "datetime", "socket", "concurrent"}


@pytest.mark.parametrize(
    ("state", "now", "opened_at", "trial_in_flight", "expected"),
    [
        (STATE_CLOSED, None, None, False, Admission.ADMIT),
        (STATE_CLOSED, None, None, True, Admission.ADMIT),
        (STATE_OPEN, OPENED, OPENED, False, Admission.STILL_OPEN),
        (STATE_OPEN, OPENED + 29.9, OPENED, False, Admission.STILL_OPEN),
        (STATE_OPEN, OPENED + 30, OPENED, False, Admission.HALF_OPEN),
        (STATE_OPEN, OPENED + 3600, OPENED, False, Admission.HALF_OPEN),
        (STATE_OPEN, None, None, False, Admission.HALF_OPEN),  # pybreaker: no opened_at
        (STATE_HALF_OPEN, None, None, False, Admission.TRIAL),
        (STATE_HALF_OPEN, None, None, True, Admission.TRIAL_IN_PROGRESS),
    ],
)
def test_admission_table(
    state: str, now: float | None, opened_at: float | None, trial_in_flight: bool,
    expected: Admission,
) -> None:
    decision = driver_policy.admit(
        state, now=now, opened_at=opened_at, reset_timeout=30, trial_in_flight=trial_in_flight
    )
    assert decision is expected
    assert decision.refused == (expected in (Admission.STILL_OPEN, Admission.TRIAL_IN_PROGRESS))


def test_admission_rejects_unknown_states_and_a_missing_now() -> None:
    with pytest.raises(ValueError, match="unknown breaker state"):
        driver_policy.admit("ajar", now=None, opened_at=None, reset_timeout=1,
                            trial_in_flight=False)
    with pytest.raises(ValueError, match="needs now"):
        driver_policy.admit(STATE_OPEN, now=None, opened_at=OPENED, reset_timeout=1,
                    trial_in_flight=False)


@pytest.mark.parametrize(
    ("state", "failures", "fail_max", "expected"),
    [
        (STATE_CLOSED, 1, 3, None),
        (STATE_CLOSED, 2, 3, None),
        (STATE_CLOSED, 3, 3, STATE_OPEN),
        (STATE_CLOSED, 4, 3, STATE_OPEN),  # counted elsewhere too (shared storage)
        (STATE_CLOSED, 1, 1, STATE_OPEN),
        (STATE_HALF_OPEN, 1, 3, STATE_OPEN),  # a failed trial re-opens at once
    ],
)
def test_failure_table(state: str, failures: int, fail_max: int, expected: str | None) -> None:
    assert driver_policy.on_failure(state, failures=failures, fail_max=fail_max) == expected


@pytest.mark.parametrize(
    ("state", "successes", "threshold", "expected"),
    [
        (STATE_CLOSED, 0, 1, None),
        (STATE_CLOSED, 5, 1, None),
        (STATE_HALF_OPEN, 1, 1, STATE_CLOSED),
        (STATE_HALF_OPEN, 1, 3, None),
        (STATE_HALF_OPEN, 2, 3, None),
        (STATE_HALF_OPEN, 3, 3, STATE_CLOSED),
    ],
)
def test_success_table(state: str, successes: int, threshold: int, expected: str | None) -> None:
    decided = driver_policy.on_success(state, successes=successes, success_threshold=threshold)
    assert decided == expected
