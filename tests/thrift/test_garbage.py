"""Peers that misbehave (tests/thrift/scripted.py): a clear error, the connection
discarded, nothing leaked -- also over 500 instance churns."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.core.errors import ConnectionFailure
from kitsd.sd import thrift
from tests.helpers import wait_for
from tests.thrift.conftest import StartServers
from tests.thrift.scripted import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _call(flavour: str, store: Any, address: str, transport: Any, **options: Any) -> Any:
    if flavour == "sync":
        endpoint: Any = thrift.factory(store.Store, "echo", transport=transport,
                                       **options)(address)
        return endpoint, endpoint
    endpoint = thrift.async_factory(store.Store, "echo", transport=transport, **options)(address)
    return endpoint, lambda request: asyncio.run(endpoint(request))


CASES = [
    ("http", "framed", thrift.ThriftProtocolError, "an HTTP or TLS server, not Thrift"),
    ("http", "buffered", thrift.ThriftProtocolError, "received an undecodable reply"),
    ("random", "framed", thrift.ThriftProtocolError, "received "),
    ("random", "buffered", thrift.ThriftProtocolError, "received "),
    ("huge", "framed", thrift.ThriftProtocolError, "max_frame_size is 16384000"),
    ("seqid", "framed", thrift.ThriftProtocolError, "sequence id"),
    ("seqid", "buffered", thrift.ThriftProtocolError, "sequence id"),
    ("method", "framed", thrift.ThriftProtocolError, "a reply to 'whoami'"),
    ("method", "buffered", thrift.ThriftProtocolError, "a reply to 'whoami'"),
    ("extra", "framed", thrift.ThriftProtocolError, "bytes after the reply's frame"),
    ("truncated", "framed", thrift.ThriftConnectionLost, "after the request was sent"),
    ("truncated", "buffered", thrift.ThriftConnectionLost, "after the request was sent"),
    ("close", "framed", thrift.ThriftConnectionLost, "the connection was closed"),
    ("close", "buffered", thrift.ThriftConnectionLost, "the connection was closed"),
]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(("mode", "transport", "kind", "message"), CASES,
                         ids=[f"{mode}-{transport}" for mode, transport, *_ in CASES])
def test_misbehaving_peer(store: Any, flavour: str, mode: str, transport: str,
                          kind: type[thrift.ThriftError], message: str) -> None:
    open_before = fds()
    with ScriptedServer(mode, transport=transport) as server:
        endpoint, call = _call(flavour, store, server.address, transport)
        for _ in range(3):
            with pytest.raises(kind) as caught:
                call({"text": "x"})
            assert message in str(caught.value)
            assert f"Thrift Store.echo on {server.address}: " in str(caught.value)
            assert not isinstance(caught.value, ConnectionFailure)  # the request was sent
            assert endpoint.idle_connections == 0  # discarded, never reused
        assert server.connections == 3
        endpoint.close()
    wait_for(lambda: fds() == open_before, what="every socket closed (the server's too)")


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_trickling_reply_is_bounded_by_the_deadline(store: Any, flavour: str) -> None:
    """Every byte arrives well within any per-read timeout; the deadline still ends it."""
    with ScriptedServer("trickle") as server:
        endpoint, call = _call(flavour, store, server.address, "framed", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(thrift.ThriftTimeout):
            call({"text": "x"})
        assert time.monotonic() - started < 1.5
        assert endpoint.idle_connections == 0
        endpoint.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_scripted_peer_answers_correctly_when_told_to(store: Any, flavour: str) -> None:
    """The control case: the harness itself is a valid Thrift peer."""
    with ScriptedServer("echo") as server:
        endpoint, call = _call(flavour, store, server.address, "framed")
        assert call({"text": "x"}) == "scripted"
        assert endpoint.idle_connections == 1
        endpoint.close()


@pytest.fixture
def garbage_process() -> Iterator[str]:
    """A garbage-sending peer in a process of its own, so /proc/self/fd counts ours only."""
    process = subprocess.Popen([sys.executable, "-m", "tests.thrift.scripted", "http", "framed"],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    try:
        yield line.split()[1]
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.kill()
        process.wait(10)
        process.stdout.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_no_leak_over_500_instance_churns(store: Any, store_servers: StartServers,
                                          garbage_process: str, flavour: str) -> None:
    """Instances come and go 500 times while calls go to a good instance and to one
    that sends garbage frames: every call to the good one succeeds, every call to the
    garbage one fails clearly, and afterwards not one file descriptor more is open."""
    (good,) = store_servers(1, transport="framed")
    registry = sd.MemoryRegistry()
    keeper = registry.registrar("store", good.address)
    keeper.register()
    factory: Any = (thrift.factory if flavour == "sync" else thrift.async_factory)(
        store.Store, "whoami", transport="framed")
    loop = asyncio.new_event_loop()
    gc.collect()
    open_before = fds()
    failures: list[BaseException] = []
    garbage = 0
    with sd.Endpointer(registry.instancer("store"), factory) as endpointer:
        churner = registry.registrar("store", garbage_process)
        for _ in range(500):
            churner.register()
            for endpoint in endpointer.endpoints():
                try:
                    result = endpoint(None)
                    if flavour == "async":
                        result = loop.run_until_complete(result)
                    assert result == good.address
                except thrift.ThriftProtocolError as error:
                    if error.instance != garbage_process:
                        failures.append(error)
                    garbage += 1
                except Exception as error:
                    failures.append(error)
            churner.deregister()
    assert failures == []
    assert garbage == 500
    assert fds() == open_before
    loop.close()


def test_retry_moves_past_a_garbage_instance(store: Any, store_servers: StartServers) -> None:
    (good,) = store_servers(1, transport="framed")
    with ScriptedServer("random") as bad, sd.Endpointer(
            sd.FixedInstancer([bad.address, good.address]),
            thrift.factory(store.Store, "whoami", transport="framed")) as endpointer:
        call = lb.retry(2, 5.0, lb.RoundRobin(endpointer))
        assert [call(None) for _ in range(6)] == [good.address] * 6
