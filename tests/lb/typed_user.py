"""A user's code, typed as a user writes it: what ``mypy --strict`` must see at each
step (issue 15.6).  ``tests/lb/test_typed_user.py`` runs mypy on this file; it is
never run itself (its functions would need a live registry).

The request and response types of an endpoint survive every layer: the factory
(``sd.http``, a plain function), the Endpointer, the balancers, ``breaker``'s
middleware and per-instance breakers, ``lb.retry``/``lb.retry_async`` (hedged
too), ``sd.chain`` and ``lb.deadline``; correct code gets no ``no-any-return``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, assert_type

import httpx
import pybreaker

from kitsd import breaker, lb, sd


@dataclass(frozen=True)
class User:
    id: int
    name: str


def encode(user_id: int) -> dict[str, Any]:
    return {"params": {"id": user_id}}


def decode(response: httpx.Response) -> User:
    body = response.json()
    return User(int(body["id"]), str(body["name"]))


def new_breaker(instance: str) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=5, name=instance)


def get_user(registry: sd.MemoryRegistry, user_id: int) -> User:
    """The README's building blocks, sync: returns a User, not Any."""
    factory = sd.http.factory("GET", "/users", encode=encode, decode=decode)
    assert_type(factory, Callable[[str], sd.http.HTTPEndpoint[int, User]])
    guarded = breaker.per_instance(factory, new_breaker)
    assert_type(guarded, Callable[[str], breaker.BreakerEndpoint[int, User]])
    with sd.Endpointer(registry.instancer("users"), guarded) as endpointer:
        assert_type(endpointer, sd.Endpointer[breaker.BreakerEndpoint[int, User]])
        balancer = lb.RoundRobin(endpointer)
        assert_type(balancer.endpoint(), breaker.BreakerEndpoint[int, User])
        retrying = lb.retry(3, 1.0, balancer, name="users",
                            wait=lambda attempt, error, elapsed: 0.01 * attempt,
                            callback=lambda attempt, error: (attempt < 3, None))
        assert_type(retrying, Callable[[int], User])
        call = sd.chain(breaker.circuit_breaker(pybreaker.CircuitBreaker(fail_max=10)))(
            retrying)
        assert_type(call, breaker.BreakerEndpoint[int, User])
        with lb.deadline(0.5):
            user = call(user_id)
        assert_type(user, User)
        return user


def hedged(registry: sd.MemoryRegistry) -> User:
    """A hedged retry: a HedgedEndpoint of the same types, with close()."""
    factory = sd.http.factory("GET", "/users", encode=encode, decode=decode)
    with sd.Endpointer(registry.instancer("users"), factory) as endpointer, \
            lb.retry(2, 1.0, lb.PeakEWMA(endpointer), hedge=lb.Hedge(delay=0.05),
                     discard=lambda user: None) as call:
        assert_type(call, lb.HedgedEndpoint[int, User])
        assert_type(call(7), User)
        return call(7)


async def get_user_async(registry: sd.MemoryRegistry, user_id: int) -> User:
    """The same over asyncio: awaiting gives a User."""
    factory = sd.http.async_factory("GET", "/users", encode=encode, decode=decode)
    assert_type(factory, Callable[[str], sd.http.AsyncHTTPEndpoint[int, User]])
    guarded = breaker.per_instance(factory, new_breaker)
    assert_type(guarded,
                Callable[[str], breaker.BreakerEndpoint[int, Coroutine[Any, Any, User]]])
    async with sd.Endpointer(registry.instancer("users"), guarded) as endpointer:
        retrying = lb.retry_async(3, 1.0, lb.LeastLoaded(endpointer), name="users")
        assert_type(retrying, Callable[[int], Coroutine[Any, Any, User]])
        call = sd.chain(breaker.circuit_breaker(pybreaker.CircuitBreaker()))(retrying)
        with lb.deadline(0.5):
            user = await call(user_id)
        assert_type(user, User)
        with_hedge = lb.retry_async(3, 1.0, lb.Weighted(endpointer), hedge=lb.Hedge(delay=0.05))
        assert_type(with_hedge, lb.AsyncHedgedEndpoint[int, User])
        async with with_hedge:
            assert_type(await with_hedge(user_id), User)
        return user


def plain_functions() -> str:
    """Endpoints that are plain functions, through every balancer."""

    def lookup(key: bytes) -> str:
        return key.decode()

    def factory(instance: str) -> Callable[[bytes], str]:
        return lookup

    with sd.Endpointer(sd.FixedInstancer(["10.0.0.1:80"]), factory) as endpointer:
        for balancer in (lb.RoundRobin(endpointer), lb.Random(endpointer),
                         lb.ConsistentHash(endpointer, lambda key: key)):
            assert_type(lb.retry(2, 1.0, balancer)(b"k"), str)
        return lb.retry(2, 1.0, lb.RoundRobin(endpointer))(b"k")
