"""The whole stack leaves nothing running after close: no thread, no task, no open client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pybreaker

from kitsd import breaker, lb, sd
from kitsd.demo_server import DemoInstance
from tests.helpers import wait_for


def _encode(request: object) -> dict[str, Any]:
    return {}


def _decode(response: httpx.Response) -> Any:
    return response.json()


def _closed(endpoint: sd.http.HTTPEndpoint[Any, Any]) -> bool:
    client = endpoint.client  # made by the first call, which every endpoint here has had
    assert client is not None
    return client.is_closed


def test_sync_stack_closes_every_client(no_thread_leaks: None) -> None:
    servers = [DemoInstance() for _ in range(2)]
    registry = sd.MemoryRegistry()
    made: list[sd.http.HTTPEndpoint[Any, Any]] = []

    def factory(instance: str) -> Any:
        build = sd.http.factory("GET", "/x", encode=_encode, decode=_decode)
        endpoint = build(instance)
        made.append(endpoint)
        return endpoint

    guarded = breaker.per_instance(factory, lambda i: pybreaker.CircuitBreaker(name=i))
    try:
        registrars = [registry.registrar("svc", server.instance) for server in servers]
        for registrar in registrars:
            registrar.register()
        with sd.Endpointer(registry.instancer("svc"), guarded) as endpointer:
            call = lb.retry(2, 5.0, lb.RoundRobin(endpointer))
            assert {call(n)["instance"] for n in range(4)} == {s.instance for s in servers}
            registrars[0].deregister()  # the instance leaves: closed on the closer thread
            departed = next(e for e in made if e.instance == servers[0].instance)
            wait_for(lambda: _closed(departed), what="departed client closed")
            closed = {e.instance: _closed(e) for e in made}
            assert closed == {servers[0].instance: True, servers[1].instance: False}
        assert all(_closed(e) for e in made)
    finally:
        for server in servers:
            server.kill()


async def test_async_stack_closes_every_client_and_task() -> None:
    server = DemoInstance()
    registry = sd.MemoryRegistry()
    made: list[sd.http.AsyncHTTPEndpoint[Any, Any]] = []
    before = asyncio.all_tasks()

    def factory(instance: str) -> Any:
        build = sd.http.async_factory("GET", "/x", encode=_encode, decode=_decode)
        endpoint = build(instance)
        made.append(endpoint)
        return endpoint

    try:
        registry.registrar("svc", server.instance).register()
        async with sd.Endpointer(registry.instancer("svc"), factory) as endpointer:
            call = lb.retry_async(2, 5.0, lb.LeastLoaded(endpointer))
            results = await asyncio.gather(*(call(n) for n in range(10)))
            assert {r["instance"] for r in results} == {server.instance}
            client = made[0]._client
            assert client is not None
            assert not client.is_closed
        assert client.is_closed
        assert asyncio.all_tasks() == before
    finally:
        server.kill()
