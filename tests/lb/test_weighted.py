"""lb.Weighted: smooth weighted round robin over InstanceInfo.weight (issue 9.2)."""

from __future__ import annotations

import ast
import inspect
import random
from collections import Counter
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb.weighted_policy import smooth_schedule
from tests.lb.sources import WithInfo, noop, picks_from_threads


def test_schedule_module_is_pure() -> None:
    tree = ast.parse(inspect.getsource(lb.weighted_policy))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random"})


def test_nginx_example() -> None:
    assert list(smooth_schedule([5, 1, 1])) == [0, 0, 1, 0, 2, 0, 0]


def test_cycle_is_reduced_by_the_gcd() -> None:
    assert list(smooth_schedule([2, 2])) == [0, 1]


@pytest.mark.parametrize("size", [7, 3000])  # nginx's loop, and the heap for large sets
def test_every_prefix_stays_within_one_pick_of_its_share(size: int) -> None:
    rng = random.Random(size)
    weights = [rng.randrange(0, 6) for _ in range(size)]
    weights[0] = 3
    schedule = smooth_schedule(weights)
    total = sum(weights)
    assert len(schedule) == total
    counts = [0] * size
    for t, index in enumerate(schedule, 1):
        counts[index] += 1
        if t % max(1, total // 200) == 0 or t < 50:
            for i in range(size):
                assert abs(counts[i] - t * weights[i] / total) < 1.5
    assert counts == weights


def test_shares_within_one_percent_over_100000_picks() -> None:
    weights = {"10.0.0.1:80": 1, "10.0.0.2:80": 2, "10.0.0.3:80": 3, "10.0.0.4:80": 10}
    source = WithInfo(weights)
    balancer = lb.Weighted(source)
    counts = Counter(balancer.pick().instance for _ in range(100_000))
    total = sum(weights.values())
    for name, weight in weights.items():
        assert abs(counts[name] / 100_000 - weight / total) <= 0.01 * weight / total


def test_no_bursts() -> None:
    balancer = lb.Weighted(WithInfo({"a:1": 5, "b:1": 1, "c:1": 1}))
    picks = [balancer.pick().instance for _ in range(70)]
    longest = max(len(run) for run in "".join(p[0] for p in picks).replace("b", " ")
                  .replace("c", " ").split())
    assert longest <= 4  # nginx: a a b a c a a, so at most 2 + 2 across a cycle


def test_weight_zero_is_excluded_even_when_steered() -> None:
    balancer = lb.Weighted(WithInfo({"a:1": 0, "b:1": 1, "c:1": 1}))
    assert "a:1" not in {balancer.pick().instance for _ in range(100)}
    assert {balancer.pick({"b:1"}).instance for _ in range(50)} == {"c:1"}
    assert {balancer.pick({"b:1", "c:1"}).instance for _ in range(50)} <= {"b:1", "c:1"}


def test_every_weight_zero_means_no_endpoints() -> None:
    with pytest.raises(lb.NoEndpointsError):
        lb.Weighted(WithInfo({"a:1": 0, "b:1": 0})).pick()


def test_weight_change_takes_effect_on_the_next_set() -> None:
    source = WithInfo({"a:1": 1, "b:1": 1})
    balancer = lb.Weighted(source)
    assert Counter(balancer.pick().instance for _ in range(100)) == {"a:1": 50, "b:1": 50}
    source.set({"a:1": 3, "b:1": 1})
    assert Counter(balancer.pick().instance for _ in range(100)) == {"a:1": 75, "b:1": 25}
    assert balancer.weights() == {"a:1": 3, "b:1": 1}


def test_without_metadata_it_is_round_robin() -> None:
    names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    with sd.Endpointer(sd.FixedInstancer(names), noop) as endpointer:
        balancer = lb.Weighted(endpointer)
        assert [balancer.pick().instance for _ in range(6)] == names * 2


def test_ejected_instance_is_skipped() -> None:
    balancer = lb.Weighted(WithInfo({"a:1": 5, "b:1": 1}))
    first = balancer.pick()
    balancer.report(first, ConnectionRefusedError())
    assert {balancer.pick().instance for _ in range(20)} == {"b:1"}


def test_many_threads_share_by_weight() -> None:
    source = WithInfo({"a:1": 3, "b:1": 1})
    balancer = lb.Weighted(source)
    counts = picks_from_threads(balancer, 8, 1000)
    by_name = {endpoint(None): n for endpoint, n in counts.items()}
    assert by_name == {"a:1": 6000, "b:1": 2000}


def test_empty_set_raises() -> None:
    with (sd.Endpointer(sd.FixedInstancer([]), noop) as endpointer,
          pytest.raises(lb.NoEndpointsError)):
        lb.Weighted(endpointer).endpoint()



def test_asyncio_retry_over_weighted() -> None:
    import asyncio

    from kitsd.sd.endpoint_set import EndpointSet
    from kitsd.sd.instance_info import InstanceInfo

    def answer(name: str) -> Any:
        async def endpoint(request: Any) -> str:
            await asyncio.sleep(0)
            return name
        return endpoint

    class Source:
        current = EndpointSet(("a:1", "b:1"), (answer("a:1"), answer("b:1")),
                              info={"a:1": InstanceInfo(weight=3)})

        def snapshot(self) -> EndpointSet:
            return self.current

        def endpoints(self) -> list[Any]:
            return list(self.current.endpoints)

    async def main() -> Counter[str]:
        call = lb.retry_async(2, 5.0, lb.Weighted(Source()))
        return Counter(await asyncio.gather(*(call(n) for n in range(400))))

    assert asyncio.run(main()) == {"a:1": 300, "b:1": 100}
