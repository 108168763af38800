"""Tests for sd.endpoint_cache, the pure state machine behind the Endpointer.

The first three tests follow go-kit's ``sd/endpoint_cache_test.go`` (TestEndpointCache,
TestEndpointCacheErrorAndTimeout, TestBadFactory); the cache returns what to close
instead of closing, so "was closed" means "was handed back to be closed".
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from kitsd.sd.endpoint_cache import EndpointCache, Read
from kitsd.sd.event import Delta, Event


class Ep:
    """A stand-in endpoint that knows its instance."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    def __repr__(self) -> str:
        return f"Ep({self.instance})"


class Factory:
    """Counts calls per instance; fails for the instances in ``failing``."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.failing = set() if failing is None else failing

    def __call__(self, instance: str) -> Ep:
        self.calls.append(instance)
        if instance in self.failing:
            raise RuntimeError(f"cannot build {instance}")
        return Ep(instance)


def names(endpoints: tuple[Ep, ...] | list[Ep]) -> list[str]:
    return [endpoint.instance for endpoint in endpoints]


def test_endpoint_cache_as_go_kit() -> None:
    factory = Factory()
    cache: EndpointCache[Ep] = EndpointCache(factory)
    closed: Counter[int] = Counter()

    def update(*instances: str) -> list[Ep]:
        to_close = cache.update(Event(instances), now=0.0)
        closed.update(id(endpoint) for endpoint in to_close)
        return to_close

    # Populate: nothing closed.
    assert update("a:1", "b:1") == []
    first = cache.read(0.0).endpoints
    assert names(first) == ["a:1", "b:1"]
    a, b = first

    # The same instances again: a no-op.
    assert update("a:1", "b:1") == []
    assert cache.read(0.0).endpoints == first

    # An error (no invalidation configured): keep serving the old endpoints.
    assert cache.update(Event((), RuntimeError("sd error")), now=0.0) == []
    assert cache.read(1e9).endpoints == first

    # a,b -> a,b,c: only c is new; nothing closed; existing endpoints kept.
    assert update("a:1", "b:1", "c:1") == []
    second = cache.read(0.0).endpoints
    assert names(second) == ["a:1", "b:1", "c:1"]
    assert second[0] is a
    assert second[1] is b

    # a,b,c -> b,c: a is handed back to close, exactly once.
    assert update("b:1", "c:1") == [a]
    third = cache.read(0.0).endpoints
    assert names(third) == ["b:1", "c:1"]
    assert third[0] is b

    # b,c -> nothing: the rest are closed.
    assert sorted(names(update())) == ["b:1", "c:1"]
    assert cache.read(0.0).endpoints == ()

    assert factory.calls == ["a:1", "b:1", "c:1"]  # once per new instance
    assert set(closed.values()) == {1}  # every endpoint closed exactly once
    assert len(closed) == 3


def test_endpoint_cache_error_and_timeout_as_go_kit() -> None:
    timeout = 0.1
    factory = Factory()
    cache: EndpointCache[Ep] = EndpointCache(factory, invalidate_on_error=timeout)
    now = 1000.0

    # Populate.
    assert cache.update(Event(("a:1",)), now) == []
    assert names(cache.read(now).endpoints) == ["a:1"]
    (a,) = cache.read(now).endpoints

    # Send an error; time stands still: still serving, nothing closed.
    first_error = RuntimeError("sd error")
    assert cache.update(Event((), first_error), now) == []
    assert cache.read(now) == Read((a,))

    # Less than the timeout later: still serving.
    now += timeout / 2
    assert cache.read(now) == Read((a,))

    # A second error must neither replace the first nor move the deadline.
    assert cache.update(Event((), RuntimeError("another sd error")), now) == []

    # Past the timeout: every endpoint handed back to close, and the FIRST error reported.
    now += timeout
    read = cache.read(now)
    assert read.endpoints == ()
    assert read.error is first_error
    assert read.to_close == [a]
    assert cache.instances == ()

    # Reading again: still the first error, nothing more to close.
    again = cache.read(now)
    assert again.error is first_error
    assert again.to_close == []

    # Another error keeps the original one.
    assert cache.update(Event((), RuntimeError("yet another")), now) == []
    assert cache.read(now).error is first_error

    # A good event recovers: a fresh endpoint from the factory, no error.
    assert cache.update(Event(("a:1",)), now) == []
    recovered = cache.read(now)
    assert recovered.error is None
    assert names(recovered.endpoints) == ["a:1"]
    assert recovered.endpoints[0] is not a
    assert factory.calls == ["a:1", "a:1"]


def test_bad_factory_as_go_kit(caplog: pytest.LogCaptureFixture) -> None:
    factory = Factory(failing={"foo:1234", "bar:5678"})
    cache: EndpointCache[Ep] = EndpointCache(factory)
    with caplog.at_level(logging.ERROR, logger="kitsd.sd.endpoint_cache"):
        assert cache.update(Event(("foo:1234", "bar:5678")), 0.0) == []
    assert cache.read(0.0).endpoints == ()
    logged = [record.getMessage() for record in caplog.records]
    assert any("foo:1234" in message for message in logged)
    assert any("bar:5678" in message for message in logged)
    assert all(record.exc_info is not None for record in caplog.records)


def test_failed_instance_is_skipped_and_retried_on_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = Factory(failing={"b:1"})
    cache: EndpointCache[Ep] = EndpointCache(factory)
    with caplog.at_level(logging.ERROR, logger="kitsd.sd.endpoint_cache"):
        cache.update(Event(("a:1", "b:1", "c:1")), 0.0)
    assert names(cache.read(0.0).endpoints) == ["a:1", "c:1"]
    assert cache.instances == ("a:1", "c:1")
    assert len(caplog.records) == 1
    assert "b:1" in caplog.records[0].getMessage()

    # The next event (even with the same instances) tries b again; a and c are kept.
    factory.failing.clear()
    cache.update(Event(("a:1", "b:1", "c:1")), 0.0)
    assert names(cache.read(0.0).endpoints) == ["a:1", "b:1", "c:1"]
    assert factory.calls == ["a:1", "b:1", "c:1", "b:1"]


def test_endpoints_are_in_sorted_instance_order_one_per_distinct_instance() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory())
    cache.update(Event(("c:1", "a:1", "b:1", "a:1")), 0.0)
    endpoints = cache.read(0.0).endpoints
    assert names(endpoints) == sorted({"a:1", "b:1", "c:1"})
    assert cache.instances == tuple(names(endpoints))


def test_error_events_ignore_their_instances() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory(), invalidate_on_error=5.0)
    cache.update(Event(("a:1",)), 0.0)
    cache.update(Event(("b:1", "c:1"), RuntimeError("stale")), 0.0)
    assert names(cache.read(1.0).endpoints) == ["a:1"]


def test_without_invalidation_errors_never_expire() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory())
    cache.update(Event(("a:1",)), 0.0)
    cache.update(Event((), RuntimeError("down")), 0.0)
    read = cache.read(1e12)
    assert read.error is None
    assert names(read.endpoints) == ["a:1"]


def test_deadline_is_inclusive_as_go_kit() -> None:
    # go-kit serves while now is *before* the deadline; at the deadline it invalidates.
    timeout = 2.0
    cache: EndpointCache[Ep] = EndpointCache(Factory(), invalidate_on_error=timeout)
    cache.update(Event(("a:1",)), 10.0)
    cache.update(Event((), RuntimeError("down")), 10.0)
    assert cache.read(10.0 + timeout - 0.001).error is None
    assert cache.read(10.0 + timeout).error is not None


def test_zero_timeout_invalidates_on_the_next_read() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory(), invalidate_on_error=0.0)
    cache.update(Event(("a:1",)), 5.0)
    error = RuntimeError("down")
    cache.update(Event((), error), 5.0)
    assert cache.read(5.0).error is error


def test_a_good_event_before_the_deadline_clears_the_error_and_restarts_the_clock() -> None:
    timeout = 10.0
    cache: EndpointCache[Ep] = EndpointCache(Factory(), invalidate_on_error=timeout)
    cache.update(Event(("a:1",)), 0.0)
    cache.update(Event((), RuntimeError("first")), 0.0)
    cache.update(Event(("a:1", "b:1")), 5.0)  # recovered, with a change
    assert names(cache.read(timeout).endpoints) == ["a:1", "b:1"]
    second = RuntimeError("second")
    cache.update(Event((), second), 8.0)
    assert cache.read(8.0 + timeout - 0.001).error is None  # deadline counts from 8.0
    assert cache.read(8.0 + timeout).error is second


def test_close_hands_back_every_endpoint() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory())
    cache.update(Event(("a:1", "b:1")), 0.0)
    endpoints = cache.read(0.0).endpoints
    assert cache.close() == list(endpoints)
    assert cache.close() == []
    assert cache.read(0.0).endpoints == ()


def test_negative_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="-1"):
        EndpointCache(Factory(), invalidate_on_error=-1)


class NoWalkTuple(tuple[str, ...]):
    """A snapshot that fails the test if anything iterates or compares it whole."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the whole snapshot was walked")

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the whole snapshot was compared")

    def __ne__(self, other: object) -> bool:
        raise AssertionError("the whole snapshot was compared")

    __hash__ = tuple.__hash__


def test_a_delta_is_applied_without_walking_the_snapshot() -> None:
    factory = Factory()
    cache: EndpointCache[Ep] = EndpointCache(factory)
    instances = tuple(f"10.0.0.{n}:80" for n in range(100, 200))
    cache.update(Event(instances), 0.0)
    before = cache.read(0.0).endpoints
    grown = NoWalkTuple(sorted((*instances, "10.0.0.150:81")))
    assert cache.update(Event(grown, delta=Delta(instances, ("10.0.0.150:81",))), 0.0) == []
    read = cache.read(0.0)
    assert read.set.instances is grown  # the snapshot itself, not a copy
    assert names(read.endpoints) == list(tuple.__iter__(grown))
    assert all(old is new for old, new in zip(before[:51], read.endpoints[:51], strict=True))
    assert read.endpoints[51].instance == "10.0.0.150:81"
    shrunk = NoWalkTuple(grown[1:])
    to_close = cache.update(Event(shrunk, delta=Delta(grown, (), ("10.0.0.100:80",))), 0.0)
    assert names(to_close) == ["10.0.0.100:80"]
    assert cache.read(0.0).set.instances is shrunk
    assert factory.calls[100:] == ["10.0.0.150:81"]


def test_a_delta_relative_to_another_snapshot_is_not_trusted() -> None:
    cache: EndpointCache[Ep] = EndpointCache(Factory())
    cache.update(Event(("a:1", "b:1")), 0.0)
    # Claims only c was added, relative to a snapshot the cache never saw.
    cache.update(Event(("c:1",), delta=Delta(("x:1",), ("c:1",))), 0.0)
    assert names(cache.read(0.0).endpoints) == ["c:1"]


@pytest.mark.parametrize("seed", range(10))
def test_random_events_with_and_without_deltas_match_a_model(seed: int) -> None:
    # Model: after each good event, one endpoint per instance the factory could build,
    # in sorted order; an instance that stays keeps its endpoint; every endpoint built
    # is handed back to close exactly once.
    rng = random.Random(seed)
    pool = [f"h{n:02}:1" for n in range(40)]
    factory = Factory()
    built: list[Ep] = []

    def build(instance: str) -> Ep:
        built.append(factory(instance))
        return built[-1]

    cache: EndpointCache[Ep] = EndpointCache(build)
    closed: Counter[int] = Counter()
    previous: tuple[str, ...] = ()
    alive: dict[str, Ep] = {}
    for _ in range(60):
        factory.failing = set(rng.sample(pool, rng.choice([0, 0, 1, 3])))
        if rng.random() < 0.5:  # a small change with a delta, as a Broadcaster sends it
            added = sorted(set(rng.sample(pool, rng.choice([0, 1, 2]))) - set(previous))
            removed = sorted(rng.sample(previous, min(len(previous), rng.choice([0, 1]))))
            current = tuple(sorted((set(previous) - set(removed)) | set(added)))
            event = Event(current, delta=Delta(previous, tuple(added), tuple(removed)))
        else:  # a full, unsorted snapshot with duplicates and no delta
            raw = [rng.choice(pool) for _ in range(rng.choice([0, 5, 20, 40]))]
            current = tuple(sorted(set(raw)))
            event = Event(tuple(raw))
        if rng.random() < 0.15:
            assert cache.update(Event(event.instances, RuntimeError("stale")), 0.0) == []
        for endpoint in cache.update(event, 0.0):
            closed[id(endpoint)] += 1
        previous = current
        read = cache.read(0.0)
        buildable = [i for i in current if i in alive or i not in factory.failing]
        assert names(read.endpoints) == buildable
        assert read.set.instances == tuple(names(read.endpoints))
        for endpoint in read.endpoints:
            assert alive.get(endpoint.instance, endpoint) is endpoint  # kept, not rebuilt
        alive = {endpoint.instance: endpoint for endpoint in read.endpoints}
    for endpoint in cache.close():
        closed[id(endpoint)] += 1
    assert sorted(closed) == sorted(id(endpoint) for endpoint in built)
    assert set(closed.values()) == {1}
