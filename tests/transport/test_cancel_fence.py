"""A request cancelled at the wrong moment must not leave its connection in the pool
for good (encode/httpcore#1093; kitsd/transport/_httpcore_cancel.py).

The first tests replay the claim against plain httpx, so that the fence is known to
be needed (and, should httpcore fix it, that it can go); the others cancel the
same requests through kitsd.AsyncTransport, whose pool must stay usable.  A pool
of one connection makes a leaked slot visible at once: the next request waits for
a connection that never comes (``PoolTimeout``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpcore
import httpx
import pytest

import kitsd
from kitsd import sd
from kitsd.transport import _httpcore_cancel
from kitsd.transport._concurrency import AsyncSender
from tests.transport.servers import Instance

ONE = httpx.Limits(max_connections=1, max_keepalive_connections=1)
#: how long the next request waits for the pool's one connection
POOL_WAIT = httpx.Timeout(5.0, pool=0.5)


@pytest.fixture
def instance() -> Iterator[Instance]:
    made = Instance()
    yield made
    made.kill()


def canceller(event: str) -> tuple[Callable[..., Awaitable[None]], list[asyncio.Task[Any]]]:
    """A ``trace`` extension that cancels the task in ``holder`` when httpcore reports
    ``event`` (the request's caller: what a deadline or a hedge does)."""
    holder: list[asyncio.Task[Any]] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == event and holder:
            holder.pop().cancel()

    return trace, holder


async def cancelled_then_next(client: httpx.AsyncClient, url: str, event: str) -> int:
    """Send a request cancelled at ``event``, then another; the second's status."""
    trace, holder = canceller(event)
    task = asyncio.ensure_future(client.get(url, extensions={"trace": trace}))
    holder.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    return (await client.get(url)).status_code


def stuck(pool: Any) -> list[str]:
    """Connections that are neither idle nor closed (httpcore's public view)."""
    return [each.info() for each in pool.connections
            if not (each.is_idle() or each.is_closed())]


def test_httpcore_leaks_a_connection_cancelled_before_its_request_is_sent(
    instance: Instance,
) -> None:
    """The claim, against plain httpx: cancelled right after connecting, before the
    request was sent, the connection stays NEW in the pool for good.  If this
    fails, httpcore fixed #1093: kitsd/transport/_httpcore_cancel.py can go."""

    async def main() -> None:
        inner = httpx.AsyncHTTPTransport(limits=ONE)
        async with httpx.AsyncClient(transport=inner, timeout=POOL_WAIT) as client:
            with pytest.raises(httpx.PoolTimeout):
                await cancelled_then_next(client, f"http://{instance.address}/",
                                          "connection.connect_tcp.complete")
            assert stuck(inner._pool) == [f"'http://{instance.address}', HTTP/1.1, NEW, "
                                          "Request Count: 0"]

    asyncio.run(main())


def test_the_pool_is_repaired_after_a_cancel_before_the_request_is_sent(
    instance: Instance,
) -> None:
    registry = sd.MemoryRegistry()
    registry.registrar("users", instance.address).register()

    async def main() -> None:
        inner = httpx.AsyncHTTPTransport(limits=ONE)
        transport = kitsd.AsyncTransport(registry, transport=inner)
        async with httpx.AsyncClient(transport=transport, timeout=POOL_WAIT) as client:
            assert await cancelled_then_next(
                client, "http://users/", "connection.connect_tcp.complete") == 200
            assert stuck(inner._pool) == []

    asyncio.run(main())


def test_the_default_pools_are_repaired_too(instance: Instance) -> None:
    registry = sd.MemoryRegistry()
    registry.registrar("users", instance.address).register()

    async def main() -> None:
        transport = kitsd.AsyncTransport(registry)
        async with httpx.AsyncClient(transport=transport, timeout=POOL_WAIT) as client:
            assert await cancelled_then_next(
                client, "http://users/", "connection.connect_tcp.complete") == 200
            pools = transport._pools
            assert pools is not None
            (pool,) = [pools.acquire(address) for address in pools.addresses()]
            assert stuck(pool._pool) == []
            assert len(pool._pool.connections) == 1  # the abandoned one was taken out

    asyncio.run(main())


@pytest.mark.parametrize("through_kitsd", [False, True], ids=["plain", "kitsd"])
def test_a_cancel_at_any_await_leaves_the_pool_usable(
    instance: Instance, through_kitsd: bool,
) -> None:
    """Cancel a GET after n turns of the event loop, for every n until one completes
    uncancelled: each of httpcore's await points is hit in turn, the request's
    send, its response's and its body's (read within the attempt by kitsd), and
    the close.  Plain httpx leaks at some of them (the claim again); through kitsd
    the pool of one connection serves the next request every time."""
    registry = sd.MemoryRegistry()
    registry.registrar("users", instance.address).register()

    async def once(turns: int) -> tuple[bool, bool]:
        inner = httpx.AsyncHTTPTransport(limits=ONE)
        transport: httpx.AsyncBaseTransport = inner
        url = f"http://{instance.address}/"
        if through_kitsd:
            transport, url = kitsd.AsyncTransport(registry, transport=inner), "http://users/"
        async with httpx.AsyncClient(transport=transport, timeout=POOL_WAIT) as client:
            task = asyncio.ensure_future(client.get(url))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
                completed = True
            except asyncio.CancelledError:
                completed = False
            try:
                usable = (await client.get(url)).status_code == 200
            except httpx.PoolTimeout:
                usable = False
            return completed, usable

    async def main() -> list[int]:
        leaks = []
        for turns in range(200):
            completed, usable = await once(turns)
            if not usable:
                leaks.append(turns)
            if completed:
                break
        else:
            pytest.fail("no request completed within 200 turns of the loop")
        return leaks

    leaks = asyncio.run(main())
    if through_kitsd:
        assert leaks == []
    else:
        assert leaks, "plain httpx no longer leaks: httpcore#1093 may be fixed"


def test_layout_contract() -> None:
    """If this fails, httpcore changed what the repair reads: the transport falls back
    to the shielded path (a task per attempt); update _httpcore_cancel."""
    assert _httpcore_cancel.layout_known()
    assert _httpcore_cancel.pool_of(httpx.AsyncHTTPTransport()) is not None
    assert _httpcore_cancel.pool_of(httpx.AsyncHTTPTransport(proxy="http://proxy:1")) is None
    assert _httpcore_cancel.pool_of(httpx.MockTransport(lambda r: httpx.Response(200))) is None


def test_a_transport_without_a_visible_pool_gets_the_shielded_path() -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    send = AsyncSender(mock).send
    assert isinstance(send, functools.partial)
    assert send.func is _httpcore_cancel.shielded_send
    assert not isinstance(AsyncSender(httpx.AsyncHTTPTransport()).send, functools.partial)


def test_repair_leaves_connections_in_use_alone(instance: Instance) -> None:
    """A response still open on a connection holds it: repair takes nothing."""

    async def main() -> None:
        inner = httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(transport=inner) as client, client.stream(
                "GET", f"http://{instance.address}/") as response:
            assert _httpcore_cancel.repair(inner._pool) == 0
            assert len(inner._pool.connections) == 1
            await response.aread()

    asyncio.run(main())


def test_repair_takes_out_a_connection_nobody_holds() -> None:
    async def main() -> None:
        pool = httpcore.AsyncConnectionPool()
        from httpcore._async.connection import AsyncHTTPConnection

        abandoned = AsyncHTTPConnection(httpcore.Origin(b"http", b"a", 80))
        pool._connections.append(abandoned)
        assert _httpcore_cancel.repair(pool) == 1
        assert pool.connections == []
        await asyncio.sleep(0)  # its close ran

    asyncio.run(main())
