"""What kitsd relies on in tenacity: fails loudly when a tenacity release changes it.

kitsd reaches into tenacity in one place only, ``lb/_tenacity.py``: a tenacity
wait strategy given as ``wait=`` is handed a ``tenacity.RetryCallState`` built as
tenacity builds one.  These tests check the pieces of tenacity that adapter uses
(the state's constructor and attributes, ``set_exception``, ``Retrying(wait=)``,
``wait_base``), that every wait strategy tenacity ships gives through the adapter
what it gives under tenacity itself, that nothing else in the retry stack imports tenacity,
and the version range ``pyproject.toml`` declares.
"""

from __future__ import annotations

import ast
import inspect
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import tenacity

from kitsd.lb import _tenacity

ROOT = Path(__file__).resolve().parents[2]
ERROR = ValueError("down")


def under_tenacity(strategy: Any, attempt: int, elapsed: float) -> float:
    """What tenacity itself computes after failed attempt ``attempt``."""
    retrying = tenacity.Retrying(wait=strategy)
    state = tenacity.RetryCallState(retrying, None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(ERROR), ERROR, None))
    state.outcome_timestamp = state.start_time + elapsed
    return float(strategy(state))


STRATEGIES = [
    tenacity.wait_fixed(0.2),
    tenacity.wait_none(),
    tenacity.wait_incrementing(start=0.1, increment=0.2, max=1),
    tenacity.wait_exponential(multiplier=0.01, max=1),
    tenacity.wait_chain(tenacity.wait_fixed(0.1), tenacity.wait_fixed(0.3)),
    tenacity.wait_fixed(0.1) + tenacity.wait_fixed(0.2),
    tenacity.wait_combine(tenacity.wait_fixed(0.1), tenacity.wait_incrementing(0.1, 0.1)),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_shipped_strategies_give_what_they_give_under_tenacity(strategy: Any,
                                                               attempt: int) -> None:
    assert _tenacity.is_strategy(strategy) is True
    adapted = _tenacity.adapt(strategy)
    assert adapted(attempt, ERROR, 0.5) == pytest.approx(under_tenacity(strategy, attempt, 0.5))


@pytest.mark.parametrize("strategy", [
    tenacity.wait_random(0.1, 0.2),
    tenacity.wait_random_exponential(multiplier=0.01, max=1),
    tenacity.wait_exponential_jitter(multiplier=0.01, max=1),
], ids=lambda s: type(s).__name__)
def test_random_strategies_stay_in_their_range(strategy: Any) -> None:
    adapted = _tenacity.adapt(strategy)
    for attempt in (1, 3, 6):
        seconds = adapted(attempt, ERROR, 0.0)
        assert 0.0 <= seconds <= 1.0 + 0.01  # wait_exponential_jitter's max, plus jitter


def test_a_custom_strategy_reads_the_state_as_tenacity_fills_it() -> None:
    seen: list[tuple[int, BaseException | None, float | None, object]] = []

    def custom(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        assert state.outcome.failed
        seen.append((state.attempt_number, state.outcome.exception(),
                     state.seconds_since_start, state.retry_object))
        return 0.25

    wait = _tenacity.wait_function(custom)
    assert wait is not None
    assert wait(3, ERROR, 1.5) == 0.25
    [(attempt, error, since_start, retry_object)] = seen
    assert attempt == 3
    assert error is ERROR
    assert since_start == pytest.approx(1.5, abs=0.01)
    assert isinstance(retry_object, tenacity.BaseRetrying)


def test_the_state_is_built_as_the_adapter_expects() -> None:
    parameters = list(inspect.signature(tenacity.RetryCallState).parameters)
    assert parameters == ["retry_object", "fn", "args", "kwargs"]
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    for attribute in ("start_time", "attempt_number", "outcome", "outcome_timestamp",
                      "idle_for"):
        assert hasattr(state, attribute), attribute
    state.set_exception((type(ERROR), ERROR, None))
    assert state.outcome is not None
    assert state.outcome.exception() is ERROR
    assert state.seconds_since_start is not None
    assert issubclass(tenacity.wait_fixed, tenacity.wait.wait_base)


def test_plain_waits_are_not_mistaken_for_strategies() -> None:
    def plain(attempt: int, error: BaseException, elapsed: float) -> float:
        return 0.0

    def one(state: Any) -> float:
        return 0.0

    assert _tenacity.is_strategy(plain) is False
    assert _tenacity.is_strategy(lambda *args: 0.0) is False
    assert _tenacity.is_strategy(one) is True
    assert _tenacity.is_strategy(lambda a, b: 0.0) is None
    assert _tenacity.wait_function(plain) is plain
    assert _tenacity.wait_function(None) is None


def test_no_other_module_of_the_retry_stack_imports_tenacity() -> None:
    """lb, breaker and the transport reach tenacity through lb/_tenacity.py only
    (sd's watchers use tenacity for their own retries, through its public API)."""
    importers = []
    for path in sorted({*ROOT.joinpath("lb").rglob("*.py"), *ROOT.joinpath("breaker").rglob("*.py"),
                        *ROOT.joinpath("kitsd", "transport").rglob("*.py")}):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "tenacity" for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["lb/_tenacity.py"]


def test_the_installed_tenacity_is_in_the_declared_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [declared] = [d for d in project["project"]["dependencies"] if d.startswith("tenacity")]
    assert declared == "tenacity>=8.2,<10"
    major = int(metadata.version("tenacity").split(".")[0])
    assert 8 <= major < 10
