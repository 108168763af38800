"""lb.PeakEWMA: P2C by peak-EWMA latency x in-flight (issue 9.1), with a fake clock."""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections import Counter
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb.peak_ewma_policy import LatencyTable
from tests.lb.sources import picks_from_threads


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _endpointer(endpoints: dict[str, Any]) -> sd.Endpointer:
    return sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)


def test_table_module_is_pure() -> None:
    tree = ast.parse(inspect.getsource(lb.peak_ewma_policy))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random"})


def test_peak_is_taken_at_once_and_decays_slowly() -> None:
    table = LatencyTable(decay=10.0)
    table.retain(("a",), now=0.0)
    table.started(0)
    table.finished(0, now=1.0, rtt=1.0)
    assert table.cost(0, 1.0) == pytest.approx(1.0)
    table.started(0)
    table.finished(0, now=11.0, rtt=0.1)  # 10 s later: weight e^-1 on the old cost
    w = 2.718281828 ** -1
    assert table.cost(0, 11.0) == pytest.approx(1.0 * w + 0.1 * (1 - w), rel=1e-6)
    assert table.cost(0, 21.0) == pytest.approx(table.cost(0, 11.0) * w, rel=1e-6)


def test_score_is_cost_times_in_flight_plus_one() -> None:
    table = LatencyTable(decay=10.0, initial=0.2)
    table.retain(("a",), now=0.0)
    table.started(0)
    table.started(0)
    assert table.score(0, 0.0) == pytest.approx(0.2 * 3)


def test_newcomer_starts_at_the_median_not_zero() -> None:
    table = LatencyTable(decay=1000.0)
    table.retain(("a", "b", "c"), now=0.0)
    for index, rtt in enumerate((0.01, 0.02, 0.9)):
        table.started(index)
        table.finished(index, 0.0, rtt)
    table.retain(("a", "b", "c", "d"), now=0.0)
    assert table.cost(table.index_of("d"), 0.0) == pytest.approx(0.02)
    assert table.cost(table.index_of("c"), 0.0) == pytest.approx(0.9)  # carried over


def test_failure_never_makes_an_instance_look_faster() -> None:
    table = LatencyTable(decay=10.0)
    table.retain(("a",), now=0.0)
    table.started(0)
    table.finished(0, 0.5, rtt=0.5)
    table.started(0)
    table.finished(0, 0.501, rtt=0.001, failed=True)
    assert table.cost(0, 0.501) >= 0.49


def test_slow_instance_gets_few_picks() -> None:
    clock = Clock()
    latency = {"10.0.0.1:80": 0.010, "10.0.0.2:80": 0.010, "10.0.0.3:80": 0.010,
               "10.0.0.4:80": 0.200}

    def make(instance: str) -> sd.Endpoint:
        def endpoint(request: Any) -> str:
            clock.now += latency[instance]
            return instance
        return endpoint

    with sd.Endpointer(sd.FixedInstancer(latency), make) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=7, clock=clock)
        counts = Counter(balancer.endpoint()(n) for n in range(4000))
    assert counts["10.0.0.4:80"] <= 0.05 * 4000
    round_robin_share = 4000 / 4
    assert counts["10.0.0.4:80"] < round_robin_share / 5


def test_busy_instance_is_avoided_while_latency_is_unknown() -> None:
    clock = Clock()
    with _endpointer({"10.0.0.1:80": str, "10.0.0.2:80": str}) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=1, clock=clock)
        busy = balancer.pick()
        balancer._started(busy.endpoint)  # type: ignore[arg-type] # one request in flight
        picks = Counter(balancer.pick().instance for _ in range(50))
    assert picks[busy.instance] == 0


def test_newcomer_is_not_flooded() -> None:
    clock = Clock()
    registry = sd.MemoryRegistry()
    regs = [registry.registrar("s", f"10.0.0.{i}:80") for i in range(1, 5)]
    for reg in regs[:3]:
        reg.register()

    def make(instance: str) -> sd.Endpoint:
        def endpoint(request: Any) -> str:
            clock.now += 0.01
            return instance
        return endpoint

    with sd.Endpointer(registry.instancer("s"), make) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=3, clock=clock)
        for n in range(300):
            balancer.endpoint()(n)
        regs[3].register()
        assert balancer.cost("10.0.0.4:80") == pytest.approx(0.01, rel=0.5)
        counts = Counter(balancer.endpoint()(n) for n in range(400))
    assert counts["10.0.0.4:80"] < 0.5 * 400  # zero cost would have taken nearly all


def test_latency_is_learnt_on_async_endpoints() -> None:
    clock = Clock()

    async def slow(request: Any) -> str:
        await asyncio.sleep(0)
        clock.now += 0.5
        return "slow"

    async def fast(request: Any) -> str:
        await asyncio.sleep(0)
        clock.now += 0.001
        return "fast"

    async def main() -> Counter[str]:
        with _endpointer({"10.0.0.1:80": slow, "10.0.0.2:80": fast}) as endpointer:
            balancer = lb.PeakEWMA(endpointer, seed=5, clock=clock)
            call = lb.retry_async(2, 5.0, balancer)
            return Counter([await call(n) for n in range(200)])

    counts = asyncio.run(main())
    assert counts["slow"] <= 10


def test_many_threads() -> None:
    names = [f"10.0.0.{i}:80" for i in range(8)]
    with _endpointer({n: (lambda r, n=n: n) for n in names}) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=1)
        counts = picks_from_threads(balancer, 8, 500)
    assert sum(counts.values()) == 4000


def test_retry_avoids_excluded_and_empty_set_raises() -> None:
    def down(request: Any) -> Any:
        raise ConnectionRefusedError("down")

    with _endpointer({"10.0.0.1:80": down, "10.0.0.2:80": lambda r: "up"}) as endpointer:
        call = lb.retry(2, 5.0, lb.PeakEWMA(endpointer, seed=2))
        assert [call(n) for n in range(20)] == ["up"] * 20
    with (sd.Endpointer(sd.FixedInstancer([]), lambda i: str) as empty,
          pytest.raises(lb.NoEndpointsError)):
        lb.PeakEWMA(empty).endpoint()


@pytest.mark.parametrize(
    ("settings", "error"),
    [({"decay": 0.0}, sd.MisuseError), ({"decay": "1"}, TypeError),
     ({"initial": -1.0}, sd.MisuseError), ({"clock": 1}, TypeError)],
)
def test_bad_settings(settings: dict[str, Any], error: type[Exception]) -> None:
    with _endpointer({"10.0.0.1:80": str}) as endpointer, pytest.raises(error):
        lb.PeakEWMA(endpointer, **settings)


def test_an_excluded_instance_is_never_traded_for_a_worse_usable_one() -> None:
    # Regression: the second of the two choices could be the excluded instance
    # (the only other one), and won when it scored better, so a retry went back
    # to the instance that had just failed.
    clock = Clock()
    latency = {"10.0.0.1:80": 0.001, "10.0.0.2:80": 0.5}

    def make(instance: str) -> sd.Endpoint:
        def endpoint(request: Any) -> str:
            clock.now += latency[instance]
            return instance
        return endpoint

    with sd.Endpointer(sd.FixedInstancer(latency), make) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=1, clock=clock)
        for instance in latency:  # learn both latencies
            while balancer.cost(instance) == 0:
                balancer.endpoint()(None)
        picks = {balancer.pick({"10.0.0.1:80"}).instance for _ in range(50)}
    assert picks == {"10.0.0.2:80"}



def test_unknown_latency_with_a_request_in_flight_is_penalised() -> None:
    # Regression: at a cold start every cost is 0, and an instance that had not
    # answered yet scored FLOOR * 2, so it took every comparison until its first
    # (slow) answer came back.
    table = LatencyTable(decay=10.0)
    table.retain(("a", "b"), now=0.0)
    table.started(0)
    table.started(1)
    table.finished(1, now=0.003, rtt=0.003)
    table.started(1)
    assert table.score(0, 0.003) > table.score(1, 0.003)


# --- fast failures must not look fast (linkerd2-proxy#4537) -------------------------------


def test_a_fast_failure_costs_more_than_the_slowest_answer_known() -> None:
    """An instance whose latency is unknown fails in 1 ms while the others answer in
    20 ms: it must not look faster than they do (it did: its cost became 1 ms)."""
    table = LatencyTable(decay=10.0)
    table.retain(("bad", "good"), now=0.0)
    table.started(1)
    table.finished(1, 0.02, rtt=0.02)
    table.started(0)
    table.finished(0, 0.021, rtt=0.001, failed=True)
    assert table.cost(0, 0.021) > table.cost(1, 0.021)


def test_a_failure_never_lowers_the_estimate_and_repeated_ones_raise_it() -> None:
    table = LatencyTable(decay=10.0)
    table.retain(("a",), now=0.0)
    table.started(0)
    table.finished(0, 0.05, rtt=0.05)
    before = table.cost(0, 0.05)
    costs = []
    for step in range(1, 6):
        now = 0.05 + step * 0.001
        table.started(0)
        table.finished(0, now, rtt=0.0005, failed=True)
        costs.append(table.cost(0, now))
    assert costs[0] >= before
    assert costs == sorted(costs)
    assert costs[-1] > costs[0]
    assert costs[-1] <= 10.0  # bounded: it is probed again once its cost decays


def test_an_abandoned_attempt_is_a_lower_bound_not_a_failure() -> None:
    """A hedge's loser cancelled after 30 ms: at least that slow, no penalty."""
    table = LatencyTable(decay=10.0)
    table.retain(("a",), now=0.0)
    table.started(0)
    table.finished(0, 0.01, rtt=0.01)
    table.started(0)
    table.finished(0, 0.04, rtt=0.03, failed=None)
    assert table.cost(0, 0.04) == pytest.approx(0.03)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_instance_that_fails_fast_gets_few_first_attempts(kind: str) -> None:
    """Through lb.retry, with ejection off: two instances answer in 20 ms, one fails in
    1 ms.  It must get few first attempts (it got about two thirds of them)."""
    clock = Clock()
    first: Counter[str] = Counter()
    seen: list[str] = []

    def work(name: str) -> str:
        seen.append(name)
        if name == "bad":
            clock.now += 0.001
            raise ConnectionResetError("fails fast")
        clock.now += 0.02
        return name

    def sync_endpoint(name: str) -> Any:
        return lambda request: work(name)

    def async_endpoint(name: str) -> Any:
        async def endpoint(request: Any) -> str:
            return work(name)
        return endpoint

    make = sync_endpoint if kind == "sync" else async_endpoint
    names = {"10.0.0.1:80": "bad", "10.0.0.2:80": "good1", "10.0.0.3:80": "good2"}
    with _endpointer({address: make(name) for address, name in names.items()}) as endpointer:
        balancer = lb.PeakEWMA(endpointer, seed=7, clock=clock, outlier_detection=None)
        if kind == "sync":
            call = lb.retry(3, 60.0, balancer)
            for _ in range(300):
                seen.clear()
                call(None)
                first[seen[0]] += 1
        else:
            async_call = lb.retry_async(3, 60.0, balancer)

            async def main() -> None:
                for _ in range(300):
                    seen.clear()
                    await async_call(None)
                    first[seen[0]] += 1

            asyncio.run(main())
    assert first["bad"] <= 30, first  # 10 %; a fair share would be 100
