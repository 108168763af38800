"""Cold starts through ``kitsd.Transport``: a fresh transport's first calls, against real
registries.

Issue item "ZooKeeper cold start": a fresh ``zk://`` transport sometimes answered
``NoEndpointsError`` to its first calls though three instances were registered (2 of 30
runs of 8 concurrent first calls).  The watch's first call failed with kazoo's
``ConnectionClosedError`` (a new client is ``CLOSED`` until its connection thread runs;
fixed by ``sd.zk.client.start_connecting``) and that error was the first answer.  Then a
connection slower than one second was reported "not connected" as the first answer
(fixed by ``sd.zk.client.ConnectAttempts``: only servers that failed are an error); for
etcd, gRPC gave a connection attempt at most 0.1-1 s (``sd.etcd.connect.CONNECT_TIMEOUT``).
The same cold start is run for etcd, Consul and DNS templates: each first call must succeed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import kitsd
from kitsd.compose.consul import ConsulDevAgent, ConsulNotInstalled
from kitsd.compose.proxy import BlackHoleProxy
from kitsd.compose.zookeeper import ZooKeeperNotInstalled, standalone
from tests.helpers import assert_no_new_threads

pytestmark = pytest.mark.integration

RUNS = 30  # fresh transports per test
CALLS = 8  # concurrent first calls on each


class _OK(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def ports() -> Iterator[list[int]]:
    """Three HTTP instances answering 200."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _OK) for _ in range(3)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    yield [int(server.server_address[1]) for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join()


@pytest.fixture(scope="module")
def zk_address(ports: list[int]) -> Iterator[str]:
    from kitsd.sd.zk import ZKRegistrar, close_client, connect

    try:
        server = standalone()
    except ZooKeeperNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    with server:
        client = connect(server.address)
        registrars = [ZKRegistrar(client, "/services/users", f"127.0.0.1:{port}")
                      for port in ports]
        for registrar in registrars:
            registrar.register()
        yield server.address
        for registrar in registrars:
            registrar.deregister()
        close_client(client)


@pytest.fixture(scope="module")
def consul_agent(ports: list[int]) -> Iterator[ConsulDevAgent]:
    from kitsd.sd.consul import connect

    try:
        agent = ConsulDevAgent(name="kitsd-cold-start", dns=True)
    except ConsulNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    with agent:
        client = connect(agent.http_addr)
        for number, port in enumerate(ports):
            client.agent.service.register("users", service_id=f"users-{number}",
                                          address="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while len(client.health.service("users", passing=True)[1]) < len(ports):
            assert time.monotonic() < deadline, "Consul did not list the instances"
            time.sleep(0.05)
        client.close()
        yield agent


def _template(kind: str, request: pytest.FixtureRequest, ports: list[int]) -> str:
    if kind == "zk":
        return f"zk://{request.getfixturevalue('zk_address')}/services/{{service}}"
    if kind == "etcd":
        from kitsd.sd.etcd import close_client, connect

        endpoint = request.getfixturevalue("kitsd_etcd").endpoint
        host, port = endpoint.rsplit(":", 1)
        client = connect(host, int(port))
        try:
            for instance in ports:
                client.put(f"/cold-start/users/{instance}", f"127.0.0.1:{instance}")
        finally:
            close_client(client)
        return f"etcd://{endpoint}/cold-start/{{service}}/"
    agent: ConsulDevAgent = request.getfixturevalue("consul_agent")
    if kind == "consul":
        return f"consul://{agent.http_addr}/{{service}}"
    return f"dnssrv://_{{service}}._tcp.service.consul?server={agent.dns_addr}"


def _first_calls(template: str) -> list[object]:
    """CALLS concurrent first calls on a fresh transport: their status codes or errors."""
    results: list[object] = [None] * CALLS
    barrier = threading.Barrier(CALLS)
    with httpx.Client(transport=kitsd.Transport(template)) as client:

        def call(number: int) -> None:
            barrier.wait()
            try:
                results[number] = client.get("http://users/").status_code
            except Exception as error:
                results[number] = f"{type(error).__name__}: {error}"

        threads = [threading.Thread(target=call, args=(number,)) for number in range(CALLS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return results


async def _first_calls_async(template: str) -> list[object]:
    async with httpx.AsyncClient(transport=kitsd.AsyncTransport(template)) as client:

        async def call() -> object:
            try:
                return (await client.get("http://users/")).status_code
            except Exception as error:
                return f"{type(error).__name__}: {error}"

        return list(await asyncio.gather(*(call() for _ in range(CALLS))))


@pytest.mark.parametrize("kind", ["zk", "etcd", "consul", "dnssrv"])
def test_every_first_call_of_a_fresh_transport_succeeds(
    kind: str, request: pytest.FixtureRequest, ports: list[int]
) -> None:
    template = _template(kind, request, ports)
    before = set(threading.enumerate())
    failed = {}
    for run in range(RUNS):
        results = _first_calls(template)
        if any(result != 200 for result in results):
            failed[run] = results
    assert failed == {}
    assert_no_new_threads(before)  # every transport closed its watches and clients


@pytest.mark.parametrize("kind", ["zk", "etcd", "consul", "dnssrv"])
def test_every_first_call_of_a_fresh_async_transport_succeeds(
    kind: str, request: pytest.FixtureRequest, ports: list[int]
) -> None:
    template = _template(kind, request, ports)
    failed = {}
    for run in range(RUNS // 3):
        results = asyncio.run(_first_calls_async(template))
        if any(result != 200 for result in results):
            failed[run] = results
    assert failed == {}


@pytest.mark.parametrize("kind", ["zk", "etcd", "consul", "dnssrv"])
def test_a_registry_slow_to_connect_serves_the_first_calls(
    kind: str, request: pytest.FixtureRequest, ports: list[int]
) -> None:
    """Fails before ConnectAttempts (zk) and CONNECT_TIMEOUT (etcd): a registry that took
    1.5 s to accept a connection was reported unreachable as the first answer (kazoo: 'not
    connected within 1s'; gRPC: each attempt had 0.1-1 s, so etcd was never reached), and
    every first call failed with NoEndpointsError though the call had 60 s to spend."""
    template = _template(kind, request, ports)
    address = template.split("server=")[1] if kind == "dnssrv" else template.split("/")[2]
    host, port = address.rsplit(":", 1)
    before = set(threading.enumerate())
    with BlackHoleProxy(host, int(port)) as proxy:
        proxy.stall()  # connections are accepted; the answers wait for resume()
        slow = threading.Timer(1.5, proxy.resume)
        slow.start()
        try:
            results = _first_calls(template.replace(address, proxy.endpoint))
        finally:
            slow.cancel()
    assert results == [200] * CALLS
    assert_no_new_threads(before)
