"""Error classification by marker types: outcome labels and connection failures are
decided by the classes themselves, the same in every process whatever it imported."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pybreaker
import pytest
from prometheus_client import CollectorRegistry

import kitsd.prometheus
from kitsd import breaker, lb, sd
from kitsd.core import observe
from kitsd.core.errors import ConnectionFailure, NoEndpoints, Rejected
from kitsd.core.observe import BudgetRefused, CallFinished

ROOT = Path(__file__).resolve().parents[2]


def failing(instance: str) -> Any:
    def endpoint(request: Any) -> Any:
        raise RuntimeError(f"{instance} failed")

    return endpoint


def exhausted_budget() -> lb.RetryBudget:
    """A budget with no retry left: no floor, no share of requests."""
    return lb.RetryBudget(percent=0.0, min_per_second=0.0, window=1.0)


# --- the retry budget's refusal -----------------------------------------------------------


def test_a_budget_refusal_is_rejected_and_counted_in_prometheus() -> None:
    endpointer = sd.Endpointer(sd.FixedInstancer(["10.0.0.1:80", "10.0.0.2:80"]), failing)
    call = lb.retry(3, 5.0, lb.RoundRobin(endpointer), name="users", budget=exhausted_budget())
    registry = CollectorRegistry()
    with kitsd.prometheus.install(registry):
        with pytest.raises(lb.RetryError) as caught:
            call(None)
        calls = {outcome: registry.get_sample_value(
            "kitsd_calls_total", {"service": "users", "outcome": outcome})
            for outcome in observe.OUTCOMES}
        refusals = registry.get_sample_value("kitsd_budget_refusals_total", {"service": "users"})
    endpointer.close()
    assert isinstance(caught.value.final, lb.RetryBudgetExhausted)
    assert observe.outcome_of(caught.value) == "rejected"
    assert {outcome: n for outcome, n in calls.items() if n} == {"rejected": 1}
    assert refusals == 1


async def test_an_async_budget_refusal_names_its_stack() -> None:
    async def afailing(request: Any) -> Any:
        raise RuntimeError("down")

    endpointer = sd.Endpointer(sd.FixedInstancer(["10.0.0.1:80", "10.0.0.2:80"]),
                               lambda instance: afailing)
    call = lb.retry_async(3, 5.0, lb.RoundRobin(endpointer), name="orders",
                          budget=exhausted_budget())
    seen: list[Any] = []
    with observe.observing(seen.append), pytest.raises(lb.RetryError):
        await call(None)
    await endpointer.aclose()
    assert BudgetRefused("orders") in seen
    finished = [o for o in seen if isinstance(o, CallFinished)]
    assert [o.outcome for o in finished] == ["rejected"]


# --- the markers each error carries ------------------------------------------------------


def test_an_open_breaker_raises_a_circuit_breaker_error_marked_rejected() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    guarded = breaker.circuit_breaker(cb)(failing("10.0.0.1:80"))
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        guarded(None)  # this failure trips the breaker: the call reached the instance
    assert not isinstance(tripped.value, Rejected)
    assert isinstance(tripped.value.__cause__, RuntimeError)
    with pytest.raises(pybreaker.CircuitBreakerError) as refused:
        guarded(None)
    assert isinstance(refused.value, breaker.CircuitOpenError)
    assert isinstance(refused.value, Rejected)
    assert observe.outcome_of(refused.value) == "rejected"


def test_no_endpoints_is_marked() -> None:
    endpointer = sd.Endpointer(sd.FixedInstancer([]), failing)
    with pytest.raises(lb.NoEndpointsError) as caught:
        lb.RoundRobin(endpointer).endpoint()
    endpointer.close()
    assert isinstance(caught.value, NoEndpoints)
    assert observe.outcome_of(caught.value) == "no_endpoints"


def test_rate_limit_and_budget_errors_are_marked() -> None:
    from kitsd.ratelimit import RateLimitExceeded

    assert issubclass(RateLimitExceeded, Rejected)
    assert issubclass(lb.RetryBudgetExhausted, Rejected)
    assert not issubclass(lb.RetryError, Rejected | NoEndpoints)


def test_your_own_marked_error_is_classified() -> None:
    class Shed(Exception, Rejected):
        pass

    class Unplugged(Exception):
        pass

    assert observe.outcome_of(Shed()) == "rejected"
    assert observe.outcome_of(Unplugged()) == "error"
    ConnectionFailure.register(Unplugged)  # an explicit choice of the user's code
    assert isinstance(Unplugged(), ConnectionFailure)
    assert observe.outcome_of(Unplugged()) == "error"  # a connection failure is an error


def test_a_registration_after_a_first_judgement_is_heard() -> None:
    class Refused(Exception):
        pass

    assert observe.outcome_of(Refused()) == "error"  # judged, and cached
    Rejected.register(Refused)
    assert observe.outcome_of(Refused()) == "rejected"


def test_connection_errors_are_connection_failures_by_definition() -> None:
    assert isinstance(ConnectionRefusedError(), ConnectionFailure)
    assert issubclass(ConnectionResetError, ConnectionFailure)
    assert not issubclass(TimeoutError, ConnectionFailure)
    assert not issubclass(OSError, ConnectionFailure)


# --- no import changes classification ------------------------------------------------------

# Classifies errors of third-party and builtin classes (nothing of kitsd's but the two
# questions asked), after importing the modules named on the command line.
_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
import httpx, pybreaker
from kitsd.core.errors import ConnectionFailure
from kitsd.core.observe import outcome_of
request = httpx.Request("GET", "http://svc/")
errors = {
    "httpx.ConnectError": httpx.ConnectError("refused", request=request),
    "httpx.ConnectTimeout": httpx.ConnectTimeout("slow", request=request),
    "httpx.ReadTimeout": httpx.ReadTimeout("slow", request=request),
    "httpx.RemoteProtocolError": httpx.RemoteProtocolError("bad", request=request),
    "pybreaker.CircuitBreakerError": pybreaker.CircuitBreakerError(),
    "ConnectionRefusedError": ConnectionRefusedError(),
    "TimeoutError": TimeoutError(),
    "ValueError": ValueError(),
}
print(json.dumps({name: [outcome_of(error), isinstance(error, ConnectionFailure)]
                  for name, error in errors.items()}, sort_keys=True))
"""

_IMPORTERS = ["kitsd.sd", "kitsd.sd.http", "kitsd.sd.grpc", "kitsd.sd.grpc._errors",
              "kitsd.transport", "kitsd.transport._stack", "kitsd.lb", "kitsd.breaker",
              "kitsd.ratelimit", "kitsd.prometheus", "kitsd"]


def _classified(*imports: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *imports], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_classification_is_the_same_whatever_was_imported() -> None:
    bare = _classified()
    assert bare == _classified(*_IMPORTERS)
    # ... and it is the classification of the marker rules, not of any registration:
    assert bare["httpx.ConnectError"] == ["error", False]
    assert bare["httpx.ConnectTimeout"] == ["timeout", False]
    assert bare["pybreaker.CircuitBreakerError"] == ["error", False]
    assert bare["ConnectionRefusedError"] == ["error", True]


def _library_files() -> list[Path]:
    roots = [ROOT / "sd", ROOT / "lb", ROOT / "breaker", ROOT / "kitsd"]
    files = []
    for root in roots:
        for path in root.rglob("*.py"):
            relative = path.relative_to(ROOT).parts
            if relative[0] == "kitsd" and len(relative) > 1 and relative[1] in {
                    "sd", "lb", "breaker", "compose"}:
                continue  # symlinks to the top-level packages, scanned there
            files.append(path)
    return files


def test_no_module_registers_a_class_with_a_marker_at_import() -> None:
    """``X.register(Y)`` run by importing a module would change ``isinstance`` for the
    whole process: markers are carried as base classes instead."""
    found = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in _library_files()
        for node in ast.parse(path.read_text(), filename=str(path)).body
        # module level only: a function may register when asked to
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        and call.func.attr == "register"
    ]
    assert found == []
