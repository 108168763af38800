"""lb.RetryBudget and its pure window (issue 9.5), and budget= on both retry drivers."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb.retry_budget_policy import BudgetWindow
from tests.lb.test_retry import Driver, Static


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_window_module_is_pure() -> None:
    tree = ast.parse(inspect.getsource(lb.retry_budget_policy))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random"})


def test_floor_alone_without_traffic() -> None:
    window = BudgetWindow(percent=20.0, min_per_second=1.0, window=10.0)
    allowed = sum(window.try_withdraw(0.0) for _ in range(50))
    assert allowed == 10  # 1 per second over 10 s


def test_percent_of_requests() -> None:
    window = BudgetWindow(percent=20.0, min_per_second=0.0, window=10.0)
    for _ in range(100):
        window.deposit(1.0)
    assert sum(window.try_withdraw(1.0) for _ in range(100)) == 20


def test_old_requests_leave_the_window() -> None:
    window = BudgetWindow(percent=50.0, min_per_second=0.0, window=10.0)
    for _ in range(10):
        window.deposit(0.0)
    assert window.balance(5.0) == pytest.approx(5.0)
    assert window.balance(10.5) == pytest.approx(0.0)
    assert not window.try_withdraw(10.5)


def test_withdrawals_leave_the_window_too() -> None:
    window = BudgetWindow(percent=0.0, min_per_second=0.1, window=10.0)  # one per window
    assert window.try_withdraw(0.0)
    assert not window.try_withdraw(9.0)
    assert window.try_withdraw(11.0)


def test_clock_going_backwards_stands_still() -> None:
    window = BudgetWindow(percent=100.0, min_per_second=0.0, window=10.0)
    window.deposit(100.0)
    window.deposit(50.0)
    assert window.deposits == 2
    assert window.try_withdraw(60.0)


def test_driver_uses_the_injected_clock() -> None:
    clock = Clock()
    budget = lb.RetryBudget(percent=0.0, min_per_second=0.5, window=2.0, clock=clock)
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.now = 5.0
    assert budget.try_withdraw()


@pytest.mark.parametrize(
    ("settings", "error"),
    [({"percent": -1.0}, sd.MisuseError), ({"window": 0.0}, sd.MisuseError),
     ({"min_per_second": float("nan")}, sd.MisuseError), ({"percent": "20"}, TypeError),
     ({"clock": 3}, TypeError)],
)
def test_bad_settings(settings: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        lb.RetryBudget(**settings)


def test_retry_rejects_a_budget_of_the_wrong_type(driver: Driver) -> None:
    with pytest.raises(TypeError, match="budget"):
        driver.retry(3, 1.0, lb.RoundRobin(Static([driver.endpoint(str)])), budget=20)


def test_total_outage_retries_stay_within_the_budget(driver: Driver) -> None:
    def down(request: Any) -> Any:
        raise ConnectionRefusedError("down")

    budget = lb.RetryBudget(percent=20.0, min_per_second=0.0, window=60.0)
    attempts = 0

    def counting(request: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return down(request)

    source = Static([driver.endpoint(counting) for _ in range(4)])
    call = driver.retry(3, 5.0, lb.RoundRobin(source, outlier_detection=None), budget=budget)
    exhausted = 0
    calls = 500
    for n in range(calls):
        with pytest.raises(lb.RetryError) as caught:
            call(n)
        if isinstance(caught.value.final, lb.RetryBudgetExhausted):
            exhausted += 1
            assert "retry budget exhausted" in str(caught.value)
            assert isinstance(caught.value.errors[-1], ConnectionRefusedError)
    retries = attempts - calls
    assert retries <= 0.2 * calls + 1
    assert exhausted > calls // 2  # without the budget: 200 % retries, none refused


@pytest.mark.parametrize("ejection", [True, False])
def test_one_failing_instance_is_still_hidden(driver: Driver, ejection: bool) -> None:
    def down(request: Any) -> Any:
        raise ConnectionRefusedError("down")

    # without ejection a tenth of the calls need a retry: within 20 % (the floor
    # covers the first calls, before there are requests to take a share of)
    healthy = 3 if ejection else 9
    source = Static([driver.endpoint(down)] + [driver.endpoint(str) for _ in range(healthy)])
    budget = lb.RetryBudget(percent=20.0, min_per_second=1.0, window=60.0)
    balancer = lb.RoundRobin(source) if ejection else lb.RoundRobin(source, outlier_detection=None)
    call = driver.retry(3, 5.0, balancer, budget=budget)
    assert [call(n) for n in range(1000)] == [str(n) for n in range(1000)]
