"""One connection pool per instance address (kitsd/transport/_pools.py): each pool
holds only its instance's connections, two services on one address share one, an
instance that leaves has its pool closed once its responses are done (never
while one still streams), and close() closes them all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx
import pytest

import kitsd
from kitsd import sd
from kitsd.transport import _core
from kitsd.transport._pools import Pools, idle
from tests.helpers import wait_for
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance


def origins(transport: object) -> dict[str, set[str]]:
    """Per pool address, the origins its connections go to."""
    pools = transport._pools  # type: ignore[attr-defined]
    seen = {}
    for address in pools.addresses():
        inner = pools._entries[address].transport
        seen[address] = {each.info().split("'")[1] for each in inner._pool.connections}
    return seen


def test_each_instance_has_a_pool_of_its_own(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    found = instances(3)
    register(registry, *found)
    client = driver(registry)
    for _ in range(30):
        assert client.request("GET", "/").status_code == 200
    assert origins(client.transport) == {
        each.address: {f"http://{each.address}"} for each in found}


def test_services_on_one_address_share_its_pool(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    (one,) = instances(1)
    register(registry, one, service="users")
    register(registry, one, service="orders")
    client = driver(registry)
    assert client.request("GET", "http://users/").status_code == 200
    assert client.request("GET", "http://orders/").status_code == 200
    pools = client.transport._pools
    assert pools.addresses() == [one.address]
    assert pools._entries[one.address].holders == 2


def test_a_leaving_instance_has_its_pool_closed_once_idle(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_core, "_SWEEP_INTERVAL", 0.0)  # sweep on every request
    staying, leaving = instances(2)
    register(registry, staying)
    leaver = registry.registrar("users", leaving.address)
    leaver.register()
    client = driver(registry)
    pools = client.transport._pools
    while leaving.total() == 0:
        assert client.request("GET", "/").status_code == 200
    inner = pools._entries[leaving.address].transport
    assert len(inner._pool.connections) == 1
    leaver.deregister()
    wait_for(lambda: pools.addresses() == [staying.address], what="the pool let go")
    assert client.request("GET", "/").status_code == 200  # a request sweeps
    assert len(pools) == 1
    assert inner._pool.connections == []  # closed


def test_a_response_still_streaming_keeps_its_pool_open(
    instances: Callable[[int], list[Instance]], registry: sd.MemoryRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_core, "_SWEEP_INTERVAL", 0.0)
    staying, leaving = instances(2)
    leaving.mode = "stream"
    leaving.stream_bytes = 4 * 1024 * 1024  # larger than buffer_body: streamed
    register(registry, staying)
    leaver = registry.registrar("users", leaving.address)
    leaver.register()
    transport = kitsd.Transport(registry)
    pools = transport._pools
    assert pools is not None
    with httpx.Client(transport=transport, base_url="http://users") as client:
        streamed = 0
        while not streamed:
            with client.stream("GET", "/") as response:
                if response.headers["content-length"] != str(leaving.stream_bytes):
                    continue
                chunks = response.iter_bytes(65536)
                first = next(chunks)
                leaver.deregister()
                wait_for(lambda: pools.addresses() == [staying.address])
                assert client.get("/").status_code == 200  # sweeps: must not close it
                streamed = len(first) + sum(len(chunk) for chunk in chunks)
        assert streamed == leaving.stream_bytes
        assert client.get("/").status_code == 200  # now the sweep closes it
        assert len(pools) == 1


def test_an_instance_back_before_its_pool_closed_keeps_it(
    instances: Callable[[int], list[Instance]], registry: sd.MemoryRegistry,
) -> None:
    (one,) = instances(1)
    registrar = registry.registrar("users", one.address)
    registrar.register()
    transport = kitsd.Transport(registry)
    with httpx.Client(transport=transport, base_url="http://users") as client:
        assert client.get("/").status_code == 200
        pools = transport._pools
        assert pools is not None
        before = pools._entries[one.address].transport
        registrar.deregister()
        wait_for(lambda: pools.addresses() == [])
        registrar.register()
        wait_for(lambda: pools.addresses() == [one.address])
        assert pools._entries[one.address].transport is before
        assert client.get("/").status_code == 200


def test_close_closes_every_pool(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    found = instances(2)
    register(registry, *found)
    client = driver(registry)
    for _ in range(10):
        client.request("GET", "/")
    pools = client.transport._pools
    inners = [pools._entries[address].transport for address in pools.addresses()]
    assert sum(len(inner._pool.connections) for inner in inners) == 2
    client.close()
    assert len(pools) == 0
    assert all(inner._pool.connections == [] for inner in inners)


def test_a_given_transport_is_shared_and_no_pools_are_made(
    instances: Callable[[int], list[Instance]], registry: sd.MemoryRegistry,
) -> None:
    found = instances(2)
    register(registry, *found)
    inner = httpx.HTTPTransport()
    transport = kitsd.Transport(registry, transport=inner)
    with httpx.Client(transport=transport, base_url="http://users") as client:
        for _ in range(20):
            client.get("/")
        assert transport._pools is None
        assert len(inner._pool.connections) == 2


def test_the_tls_context_is_made_once_and_shared() -> None:
    registry = sd.MemoryRegistry()
    for port in (1, 2, 3):
        registry.registrar("users", f"127.0.0.1:{port}").register()
    transport = kitsd.Transport(registry)
    try:
        made = [transport._new_pool() for _ in range(3)]
        contexts = {id(each._pool._ssl_context) for each in made}
        assert len(contexts) == 1
        for each in made:
            each.close()
    finally:
        transport.close()


class _Fake:
    def __init__(self) -> None:
        self.busy = False


def test_pools_rules() -> None:
    made: list[_Fake] = []

    def make() -> _Fake:
        made.append(_Fake())
        return made[-1]

    pools = Pools(make, lambda fake: not fake.busy)
    a = pools.acquire("a:1")
    assert pools.acquire("a:1") is a  # shared
    assert len(made) == 1
    pools.release("a:1")
    assert pools.sweep() == []  # still held once
    pools.release("a:1")
    a.busy = True
    assert pools.sweep() == []  # retired, but busy
    assert pools.acquire("a:1") is a  # back before it was closed
    pools.release("a:1")
    a.busy = False
    assert pools.sweep() == [a]
    assert len(pools) == 0
    b = pools.acquire("b:1")
    assert b is not a
    pools.release("unknown:1")  # ignored
    assert pools.take_all() == [b]
    pools.release("b:1")
    assert pools.sweep() == []  # closed: nothing retired any more


def test_idle_reads_httpcore_public_view() -> None:
    assert idle(httpx.HTTPTransport())
    assert idle(object())


def test_async_pools_are_closed_on_their_loop(
    instances: Callable[[int], list[Instance]], registry: sd.MemoryRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leaving instance's pool is closed by a request's sweep, on the loop that
    made its connections (the Endpointer may close endpoints from any thread)."""
    monkeypatch.setattr(_core, "_SWEEP_INTERVAL", 0.0)
    staying, leaving = instances(2)
    register(registry, staying)
    leaver = registry.registrar("users", leaving.address)
    leaver.register()

    async def main() -> None:
        transport = kitsd.AsyncTransport(registry)
        async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
            while leaving.total() == 0:
                await client.get("/")
            pools = transport._pools
            assert pools is not None
            inner = pools._entries[leaving.address].transport
            threading.Thread(target=leaver.deregister).start()  # a watch thread, say
            for _ in range(500):
                if pools.addresses() == [staying.address]:
                    break
                await asyncio.sleep(0.01)
            assert (await client.get("/")).status_code == 200
            assert inner._pool.connections == []
            assert len(pools) == 1

    asyncio.run(main())
