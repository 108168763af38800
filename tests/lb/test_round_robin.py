"""lb.RoundRobin: go-kit's round_robin_test.go scenarios, plus error pass-through and threads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.core.endpoint import Endpoint
from tests.lb.sources import Failing, Static, noop, picks_from_threads

INSTANCES = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")


@pytest.fixture
def fixed_instancer() -> Iterator[sd.FixedInstancer]:
    with sd.FixedInstancer(INSTANCES) as instancer:
        yield instancer


def test_is_a_balancer() -> None:
    assert isinstance(lb.RoundRobin(Static([])), lb.Balancer)


def test_counts_cycle_from_index_zero(fixed_instancer: sd.FixedInstancer) -> None:
    # go-kit TestRoundRobin, over a real Endpointer (sorted instance order).
    counts = dict.fromkeys(INSTANCES, 0)

    def factory(instance: str) -> Endpoint:
        def endpoint(request: Any) -> str:
            counts[instance] += 1
            return instance

        return endpoint

    with sd.Endpointer(fixed_instancer, factory) as endpointer:
        balancer = lb.RoundRobin(endpointer)
        expected = [
            [1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 1, 1], [2, 2, 1], [2, 2, 2], [3, 2, 2],
        ]
        for step, want in enumerate(expected, start=1):
            balancer.endpoint()(None)
            assert [counts[i] for i in INSTANCES] == want, f"after call {step}"


def test_empty_set_raises_no_endpoints() -> None:
    # go-kit TestRoundRobinNoEndpoints
    balancer = lb.RoundRobin(Static([]))
    with pytest.raises(lb.NoEndpointsError) as info:
        balancer.endpoint()
    assert str(info.value) == "no endpoints available"
    assert isinstance(info.value, sd.KitsdError)


def test_empty_endpointer_raises_no_endpoints() -> None:
    with (
        sd.FixedInstancer([]) as instancer,
        sd.Endpointer(instancer, noop) as endpointer,
        pytest.raises(lb.NoEndpointsError, match=r"^no endpoints available$"),
    ):
        lb.RoundRobin(endpointer).endpoint()


def test_endpointer_error_passes_through_unchanged() -> None:
    now = [100.0]
    broadcaster = sd.Broadcaster(sd.Event(INSTANCES))
    with sd.InstancerHandle(broadcaster) as instancer, sd.Endpointer(
        instancer, noop, invalidate_on_error=1.0, clock=lambda: now[0]
    ) as endpointer:
        balancer = lb.RoundRobin(endpointer)
        boom = sd.RegistryUnavailableError("registry unreachable")
        broadcaster.publish_error(boom)
        # Within invalidate_on_error the last endpoints keep serving (as go-kit).
        assert balancer.endpoint()(None) == INSTANCES[0]
        now[0] += 1.0
        with pytest.raises(sd.RegistryUnavailableError) as info:
            balancer.endpoint()
        assert info.value is boom
        assert type(info.value) is sd.RegistryUnavailableError


@pytest.mark.parametrize(
    "error", [OSError("disk on fire"), LookupError("nope"), KeyboardInterrupt()]
)
def test_source_error_passes_through_unchanged(error: BaseException) -> None:
    balancer = lb.RoundRobin(Failing(error))
    with pytest.raises(type(error)) as info:
        balancer.endpoint()
    assert info.value is error


def test_source_changes_are_seen_on_the_next_pick() -> None:
    a, b, c = noop("a"), noop("b"), noop("c")
    source = Static([a, b])
    balancer = lb.RoundRobin(source)
    assert [balancer.endpoint() for _ in range(2)] == [a, b]
    source._endpoints = [a, b, c]
    assert [balancer.endpoint() for _ in range(3)] == [c, a, b]
    source._endpoints = []
    with pytest.raises(lb.NoEndpointsError):
        balancer.endpoint()


def test_exact_counts_under_threads(no_thread_leaks: None) -> None:
    # go-kit TestRoundRobinNoRace, but stricter: RoundRobin is exact under threads.
    endpoints = [noop(name) for name in "abc"]
    balancer = lb.RoundRobin(Static(endpoints))
    threads_n, picks_n = 8, 30_000
    totals = picks_from_threads(balancer, threads_n, picks_n)
    per_endpoint = threads_n * picks_n // len(endpoints)
    assert dict(totals) == dict.fromkeys(endpoints, per_endpoint)
