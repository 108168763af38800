"""sd.thrift against a real Thrift server kitsd did not write: Apache Thrift's Go
library serving store.thrift (tests/thrift/goserver), every transport and protocol,
sync and asyncio."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.core.errors import ConnectionFailure, MisuseError
from kitsd.sd import thrift
from tests.helpers import wait_for
from tests.thrift.conftest import StartServers

FLAVOURS = ["sync", "async"]
KINDS = [("buffered", "binary"), ("buffered", "compact"), ("framed", "binary"),
         ("framed", "compact")]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Driven:
    """An async endpoint run to completion on a loop of its own, so one test body
    serves both flavours."""

    def __init__(self, endpoint: thrift.AsyncThriftEndpoint) -> None:
        self.endpoint = endpoint
        self.loop = asyncio.new_event_loop()

    def __call__(self, request: Any) -> Any:
        return self.loop.run_until_complete(self.endpoint(request))

    @property
    def idle_connections(self) -> int:
        return self.endpoint.idle_connections

    def close(self) -> None:
        self.endpoint.close()


class Endpoints:
    def __init__(self, flavour: str, store: Any) -> None:
        self.flavour = flavour
        self.store = store
        self.made: list[Any] = []

    def __call__(self, method: str, address: str, **options: Any) -> Any:
        if self.flavour == "sync":
            endpoint: Any = thrift.factory(self.store.Store, method, **options)(address)
        else:
            endpoint = Driven(thrift.async_factory(self.store.Store, method, **options)(address))
        self.made.append(endpoint)
        return endpoint

    def close(self) -> None:
        for endpoint in self.made:
            endpoint.close()
            if isinstance(endpoint, Driven):
                endpoint.loop.close()


@pytest.fixture(params=FLAVOURS)
def endpoints(request: pytest.FixtureRequest, store: Any) -> Iterator[Endpoints]:
    made = Endpoints(request.param, store)
    yield made
    made.close()


@pytest.mark.parametrize(("transport", "protocol"), KINDS)
def test_every_kind_of_call(endpoints: Endpoints, store_servers: StartServers, store: Any,
                            transport: str, protocol: str) -> None:
    (server,) = store_servers(1, transport=transport, protocol=protocol)
    kind = {"transport": transport, "protocol": protocol}

    def endpoint(method: str) -> Any:
        return endpoints(method, server.address, **kind)

    add = endpoint("add")
    assert add({"a": 2, "b": 3}) == 5
    assert add((40, 2)) == 42
    assert endpoint("echo")({"text": "héllo ✓"}) == "héllo ✓"
    assert endpoint("whoami")(None) == server.address
    item = store.Item(key="k", value=bytes(range(256)), version=7)
    assert endpoint("put")({"item": item}) is None
    assert endpoint("get")({"key": "k"}) == item
    assert len(endpoint("blob")({"size": 1_000_000})) == 1_000_000

    get = endpoint("get")
    with pytest.raises(store.NotFound) as declared:
        get({"key": "missing"})
    assert type(declared.value) is store.NotFound  # the service's own exception, untouched
    assert declared.value.key == "missing"
    assert get.idle_connections == 1  # the reply was whole: the connection stays

    fail = endpoint("fail")
    with pytest.raises(thrift.ThriftApplicationError) as application:
        fail({"message": "told to"})
    error = application.value
    assert error.type_name == "INTERNAL_ERROR"
    assert error.method == "Store.fail"
    assert error.instance == server.address
    assert f"Store.fail on {server.address}" in str(error)
    assert "told to" in str(error)
    assert not isinstance(error, ConnectionFailure)
    assert fail.idle_connections == 1

    notes = endpoint("notes")
    before = notes(None)
    note = endpoint("note")
    for _ in range(3):
        assert note({"text": "x"}) is None  # oneway: nothing to wait for
    wait_for(lambda: notes(None) == before + 3, what="three oneway notes")


def test_connections_are_reused(endpoints: Endpoints, store_servers: StartServers) -> None:
    (server,) = store_servers(1)
    echo = endpoints("echo", server.address)
    echo({"text": "warm"})
    open_before = fds()
    for index in range(200):
        assert echo({"text": str(index)}) == str(index)
    assert fds() == open_before
    assert echo.idle_connections == 1


def test_refused_is_a_connection_failure(endpoints: Endpoints) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, not listening: refused
        echo = endpoints("echo", address)
        with pytest.raises(thrift.ThriftConnectError, match="cannot connect") as caught:
            echo({"text": "x"})
    assert isinstance(caught.value, ConnectionFailure)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_timeout_bounds_a_slow_call(endpoints: Endpoints, store_servers: StartServers) -> None:
    (server,) = store_servers(1)
    sleep = endpoints("sleep", server.address, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(thrift.ThriftTimeout) as caught:
        sleep({"millis": 3000})
    assert time.monotonic() - started < 2.0
    assert (caught.value.phase, caught.value.sent) == ("read", True)
    assert not isinstance(caught.value, ConnectionFailure)
    assert "timeout=0.3s passed while waiting for the reply" in str(caught.value)
    assert sleep.idle_connections == 0  # discarded: its reply may still come


@pytest.mark.parametrize("warm", [True, False], ids=["pooled", "fresh"])
def test_hung_instance_is_bounded_by_the_retry_deadline(
        endpoints: Endpoints, store_servers: StartServers, warm: bool) -> None:
    (server,) = store_servers(1)
    echo = endpoints("echo", server.address)
    if warm:
        echo({"text": "warm"})
    server.pause()  # SIGSTOP: its kernel still accepts connections; nothing answers
    try:
        instancer = sd.FixedInstancer([server.address])
        with sd.Endpointer(instancer, lambda _instance: echo.endpoint if isinstance(
                echo, Driven) else echo) as endpointer:
            balancer = lb.RoundRobin(endpointer)
            started = time.monotonic()
            if isinstance(echo, Driven):
                call = lb.retry_async(1, 0.4, balancer)
                with pytest.raises((lb.RetryTimeout, thrift.ThriftTimeout)) as caught:
                    echo.loop.run_until_complete(call({"text": "x"}))
            else:
                with pytest.raises((lb.RetryTimeout, thrift.ThriftTimeout)) as caught:
                    lb.retry(1, 0.4, balancer)({"text": "x"})
            elapsed = time.monotonic() - started
    finally:
        server.resume()
    assert elapsed < 1.5, elapsed
    assert isinstance(caught.value, TimeoutError)


def test_hung_instance_skipped_by_retry_with_a_per_call_timeout(
        endpoints: Endpoints, store_servers: StartServers, store: Any) -> None:
    hung, good = store_servers(2)
    hung.pause()
    try:
        factory: Any
        if endpoints.flavour == "sync":
            factory = thrift.factory(store.Store, "whoami", timeout=0.2)
        else:
            factory = thrift.async_factory(store.Store, "whoami", timeout=0.2)
        instancer = sd.FixedInstancer([hung.address, good.address])
        with sd.Endpointer(instancer, factory) as endpointer:
            balancer = lb.RoundRobin(endpointer)
            started = time.monotonic()
            for _ in range(4):
                if endpoints.flavour == "sync":
                    assert lb.retry(3, 3.0, balancer)(None) == good.address
                else:
                    assert asyncio.run(lb.retry_async(3, 3.0, balancer)(None)) == good.address
            assert time.monotonic() - started < 2.5
    finally:
        hung.resume()


def test_connect_timeout_is_a_connection_failure(endpoints: Endpoints) -> None:
    """A listener whose backlog is full drops new connection attempts: connect hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue (its size is backlog + 1, or more)
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect_ex(address)
            time.sleep(0.2)  # let the handshakes land in the queue
            echo = endpoints("echo", f"127.0.0.1:{address[1]}", connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(thrift.ThriftConnectTimeout) as caught:
                echo({"text": "x"})
            assert time.monotonic() - started < 2.0
        finally:
            for filler in fillers:
                filler.close()
    assert isinstance(caught.value, ConnectionFailure)
    assert isinstance(caught.value, TimeoutError)
    assert "connect_timeout=0.3s passed while connecting" in str(caught.value)


def test_pooled_connection_to_a_restarted_server_is_replaced(
        endpoints: Endpoints, store_servers: StartServers) -> None:
    (server,) = store_servers(1)
    whoami = endpoints("whoami", server.address)
    assert whoami(None) == server.address
    server.kill()
    (again,) = store_servers(1, listen=server.address)
    assert whoami(None) == again.address  # the stale pooled connection was not used
    assert whoami.idle_connections == 1


def test_closed_endpoint(endpoints: Endpoints, store_servers: StartServers) -> None:
    (server,) = store_servers(1)
    echo = endpoints("echo", server.address)
    echo({"text": "x"})
    open_before = fds()
    echo.close()
    echo.close()  # idempotent
    assert fds() == open_before - 1
    with pytest.raises(thrift.ThriftConnectError, match="closed"):
        echo({"text": "x"})


async def test_cancelled_call_closes_its_connection(store_servers: StartServers,
                                                    store: Any) -> None:
    (server,) = store_servers(1)
    sleep = thrift.async_factory(store.Store, "sleep")(server.address)
    await sleep({"millis": 1})
    open_before = fds()
    task = asyncio.create_task(sleep({"millis": 5000}))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleep.idle_connections == 0
    assert fds() == open_before - 1
    await sleep({"millis": 1})  # a new connection
    await sleep.aclose()


async def test_close_during_a_call_closes_its_connection_when_it_ends(
        store_servers: StartServers, store: Any) -> None:
    (server,) = store_servers(1)
    sleep = thrift.async_factory(store.Store, "sleep")(server.address)
    open_before = fds()
    task = asyncio.create_task(sleep({"millis": 300}))
    await asyncio.sleep(0.1)
    async with sleep:
        pass  # closes it while the call is in flight
    assert await task is None
    assert sleep.idle_connections == 0
    assert fds() == open_before


def test_endpointer_closes_the_pool_of_an_instance_that_leaves(
        store_servers: StartServers, store: Any) -> None:
    first, second = store_servers(2)
    registry = sd.MemoryRegistry()
    registrars = [registry.registrar("store", each.address) for each in (first, second)]
    for registrar in registrars:
        registrar.register()
    with sd.Endpointer(registry.instancer("store"),
                       thrift.factory(store.Store, "whoami")) as endpointer:
        call = lb.retry(2, 5.0, lb.RoundRobin(endpointer))
        assert {call(None) for _ in range(4)} == {first.address, second.address}
        open_before = fds()
        registrars[0].deregister()
        wait_for(lambda: fds() == open_before - 1, what="the pool of the instance that left")
        assert {call(None) for _ in range(4)} == {second.address}


def test_bad_arguments(store: Any) -> None:
    with pytest.raises(MisuseError, match="method must be one of Store's methods"):
        thrift.factory(store.Store, "nope")
    with pytest.raises(MisuseError, match="transport"):
        thrift.async_factory(store.Store, "echo", transport="http")  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="timeout"):
        thrift.factory(store.Store, "echo", timeout=0)
    with pytest.raises(ValueError, match="instance"):
        thrift.factory(store.Store, "echo")("no-port")
    echo = thrift.factory(store.Store, "echo")("127.0.0.1:9")
    with pytest.raises(MisuseError, match="has no argument"):
        echo({"txt": "x"})  # refused before connecting
    assert repr(echo) == "<sd.thrift endpoint Store.echo on 127.0.0.1:9>"
