"""One breaker per instance."""

from __future__ import annotations

from typing import Any

import pybreaker
import pytest

from kitsd import breaker, sd
from kitsd.core.endpoint import is_async
from tests.breaker.test_middleware import Boom


class InstanceEndpoint:
    """A closable sync endpoint for one instance."""

    def __init__(self, instance: str, failing: bool) -> None:
        self.instance = instance
        self.failing = failing
        self.calls = 0
        self.closed = 0

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        if self.failing:
            raise Boom(self.instance)
        return (self.instance, request)

    def close(self) -> None:
        self.closed += 1


class AsyncInstanceEndpoint:
    """An async endpoint with ``aclose`` only."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.closed = 0

    async def __call__(self, request: Any) -> Any:
        return (self.instance, request)

    async def aclose(self) -> None:
        self.closed += 1


def new_breaker(instance: str) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name=instance)


def test_each_instance_gets_its_own_breaker() -> None:
    built: dict[str, InstanceEndpoint] = {}

    def factory(instance: str) -> InstanceEndpoint:
        built[instance] = InstanceEndpoint(instance, failing=instance == "bad:1")
        return built[instance]

    make = breaker.per_instance(factory, new_breaker)
    bad, good = make("bad:1"), make("good:1")
    assert bad.breaker is not good.breaker
    assert (bad.breaker.name, good.breaker.name) == ("bad:1", "good:1")

    for _ in range(2):
        with pytest.raises((Boom, pybreaker.CircuitBreakerError)):
            bad(None)
    assert bad.breaker.current_state == pybreaker.STATE_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError):
        bad(None)
    assert built["bad:1"].calls == 2
    # The healthy instance is untouched by its neighbour's open breaker.
    assert good("req") == ("good:1", "req")
    assert good.breaker.current_state == pybreaker.STATE_CLOSED


def test_endpointer_closes_the_wrapped_endpoints() -> None:
    built: list[InstanceEndpoint] = []

    def factory(instance: str) -> InstanceEndpoint:
        built.append(InstanceEndpoint(instance, failing=False))
        return built[-1]

    instancer = sd.FixedInstancer(["a:1", "b:2"])
    with sd.Endpointer(instancer, breaker.per_instance(factory, new_breaker)) as endpointer:
        endpoints = endpointer.endpoints()
        assert [e("x") for e in endpoints] == [("a:1", "x"), ("b:2", "x")]
        assert len({id(getattr(e, "breaker", None)) for e in endpoints}) == 2
    assert [e.closed for e in built] == [1, 1]


async def test_async_endpoints_stay_async_and_are_aclosed() -> None:
    built: list[AsyncInstanceEndpoint] = []

    def factory(instance: str) -> AsyncInstanceEndpoint:
        built.append(AsyncInstanceEndpoint(instance))
        return built[-1]

    make = breaker.per_instance(factory, new_breaker)
    endpoint = make("a:1")
    assert is_async(endpoint)
    assert await endpoint("x") == ("a:1", "x")
    sync_make = breaker.per_instance(lambda inst: InstanceEndpoint(inst, False), new_breaker)
    assert not is_async(sync_make("c:3"))

    async with sd.Endpointer(sd.FixedInstancer(["b:2"]), make) as endpointer:
        assert await endpointer.endpoints()[0]("y") == ("b:2", "y")
    assert [e.closed for e in built] == [0, 1]


def test_new_breaker_failure_builds_no_endpoint() -> None:
    built: list[str] = []

    def factory(instance: str) -> InstanceEndpoint:
        built.append(instance)
        return InstanceEndpoint(instance, failing=False)

    def broken(instance: str) -> pybreaker.CircuitBreaker:
        raise RuntimeError("no breaker for " + instance)

    with pytest.raises(RuntimeError, match="no breaker"):
        breaker.per_instance(factory, broken)("a:1")
    assert built == []


@pytest.mark.parametrize(
    ("factory", "new_breaker", "named"),
    [
        (None, None, "factory"),
        (None, new_breaker, "factory"),
        (lambda instance: InstanceEndpoint(instance, False), None, "new_breaker"),
        (lambda instance: InstanceEndpoint(instance, False), "breaker", "new_breaker"),
        (42, new_breaker, "factory"),
    ],
)
def test_bad_arguments_fail_at_construction(factory: Any, new_breaker: Any, named: str) -> None:
    with pytest.raises(TypeError, match=rf"per_instance: {named} must be callable"):
        breaker.per_instance(factory, new_breaker)


def test_a_new_breaker_that_is_not_a_breaker_names_new_breaker() -> None:
    built: list[str] = []

    def factory(instance: str) -> InstanceEndpoint:
        built.append(instance)
        return InstanceEndpoint(instance, failing=False)

    make = breaker.per_instance(factory, lambda instance: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"new_breaker\('a:1'\) returned NoneType"):
        make("a:1")
    assert built == []  # checked before the endpoint is built


@pytest.mark.parametrize("returned", [None, 42, "http://a:1"])
def test_a_factory_that_returns_no_endpoint_names_factory(returned: Any) -> None:
    make = breaker.per_instance(lambda instance: returned, new_breaker)
    with pytest.raises(TypeError, match=r"factory\('a:1'\) returned .*not an endpoint"):
        make("a:1")


def test_a_non_endpoint_from_the_factory_is_closed() -> None:
    class NotCallable:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    thing = NotCallable()
    make: Any = breaker.per_instance(lambda instance: thing, new_breaker)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        make("a:1")
    assert thing.closed == 1


def test_the_endpointer_skips_an_instance_whose_factory_returns_none() -> None:
    def factory(instance: str) -> Any:
        return None if instance == "bad:1" else InstanceEndpoint(instance, failing=False)

    with sd.Endpointer(sd.FixedInstancer(["bad:1", "good:1"]),
                       breaker.per_instance(factory, new_breaker)) as endpointer:
        assert [e("x") for e in endpointer.endpoints()] == [("good:1", "x")]
