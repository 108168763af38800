"""lb.Random: go-kit's random_test.go scenarios, plus seeding, error pass-through and threads."""

from __future__ import annotations

from collections import Counter

import pytest

from kitsd import lb, sd
from kitsd.core.endpoint import Endpoint
from tests.lb.sources import Failing, Static, noop, picks_from_threads


def test_is_a_balancer() -> None:
    assert isinstance(lb.Random(Static([])), lb.Balancer)


def test_uniform_within_one_percent() -> None:
    # go-kit TestRandom: 1,000,000 seeded picks over 7 endpoints, each count within 1 %.
    n, iterations = 7, 1_000_000
    endpoints = [noop(f"e{i}") for i in range(n)]
    balancer = lb.Random(Static(endpoints), seed=12345)
    pick = balancer.endpoint
    counts = Counter(pick() for _ in range(iterations))
    want = iterations / n
    tolerance = want / 100
    assert sum(counts.values()) == iterations
    assert set(counts) == set(endpoints)
    for endpoint in endpoints:
        assert abs(counts[endpoint] - want) <= tolerance, (endpoint.__name__, counts[endpoint])


def test_same_seed_same_sequence() -> None:
    endpoints = [noop(f"e{i}") for i in range(5)]

    def sequence(seed: int) -> list[Endpoint]:
        balancer = lb.Random(Static(endpoints), seed=seed)
        return [balancer.endpoint() for _ in range(200)]

    first = sequence(7)
    assert sequence(7) == first
    assert sequence(8) != first  # 5**-200: a different seed does give a different walk
    assert set(first) == set(endpoints)


def test_empty_set_raises_no_endpoints() -> None:
    with pytest.raises(lb.NoEndpointsError) as info:
        lb.Random(Static([]), seed=1).endpoint()
    assert str(info.value) == "no endpoints available"


def test_endpointer_error_passes_through_unchanged() -> None:
    now = [0.0]
    broadcaster = sd.Broadcaster(sd.Event(("10.0.0.1:80", "10.0.0.2:80")))
    with sd.InstancerHandle(broadcaster) as instancer, sd.Endpointer(
        instancer, noop, invalidate_on_error=0.5, clock=lambda: now[0]
    ) as endpointer:
        balancer = lb.Random(endpointer, seed=3)
        boom = sd.PermissionDeniedError("ACL says no")
        broadcaster.publish_error(boom)
        assert balancer.endpoint()(None) in {"10.0.0.1:80", "10.0.0.2:80"}
        now[0] = 0.5
        with pytest.raises(sd.PermissionDeniedError) as info:
            balancer.endpoint()
        assert info.value is boom


@pytest.mark.parametrize("error", [OSError("disk on fire"), LookupError("nope")])
def test_source_error_passes_through_unchanged(error: BaseException) -> None:
    with pytest.raises(type(error)) as info:
        lb.Random(Failing(error)).endpoint()
    assert info.value is error


def test_threads_total_count_and_no_errors(no_thread_leaks: None) -> None:
    endpoints = [noop(name) for name in "abcd"]
    balancer = lb.Random(Static(endpoints), seed=99)
    threads_n, picks_n = 8, 20_000
    totals = picks_from_threads(balancer, threads_n, picks_n)
    assert sum(totals.values()) == threads_n * picks_n
    assert set(totals) == set(endpoints)
    want = threads_n * picks_n / len(endpoints)
    for endpoint in endpoints:  # loose: the interleaving is not seeded, the spread is
        assert abs(totals[endpoint] - want) < want * 0.05
