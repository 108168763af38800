"""The one-line client against real Consul and real etcd (started through compose/):
0 failed idempotent calls while instances are killed, hung and added; POSTs never
sent twice; gRPC through Consul-discovered instances survives a kill."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import kitsd
import kitsd.prometheus
import kitsd.sd.consul
import kitsd.sd.etcd
import kitsd.sd.grpc
from kitsd import lb, sd
from kitsd.compose.consul import dev_agent
from kitsd.compose.etcd import single_member
from tests.grpc.servers import METHOD, GRPCInstance
from tests.helpers import wait_for
from tests.transport.servers import Instance

pytestmark = pytest.mark.integration


class Registry:
    """Registers instances in one real registry; ``template`` is the transport's URL."""

    template = ""

    def register(self, service: str, instance: Instance | GRPCInstance) -> Any:
        raise NotImplementedError

    registrars: list[Any]

    def deregister_all(self) -> None:
        for registrar in self.registrars:
            registrar.deregister()
        self.registrars.clear()

    def close(self) -> None:
        raise NotImplementedError


class ConsulRegistry(Registry):
    def __init__(self) -> None:
        self.agent = dev_agent(name="kitsd-transport")  # started by its constructor
        self.client = sd.consul.connect(self.agent.http_addr)
        self.template = f"consul://{self.agent.http_addr}/{{service}}?passing=1"
        self.registrars: list[Any] = []

    def register(self, service: str, instance: Instance | GRPCInstance) -> Any:
        registrar = sd.consul.ConsulRegistrar(
            self.client, service, "127.0.0.1", instance.port,
            service_id=f"{service}-{instance.port}", ttl=None)
        registrar.register()
        self.registrars.append(registrar)
        return registrar

    def close(self) -> None:
        for registrar in self.registrars:
            registrar.deregister()
        self.client.close()
        self.agent.close()


class EtcdRegistry(Registry):
    def __init__(self) -> None:
        self.server = single_member()  # started by its constructor
        self.client = sd.etcd.connect(endpoints=[self.server.endpoint])
        self.template = f"etcd://{self.server.endpoint}/kitsd-transport/{{service}}/"
        self.registrars: list[Any] = []

    def register(self, service: str, instance: Instance | GRPCInstance) -> Any:
        registrar = sd.etcd.EtcdRegistrar(
            self.client, f"/kitsd-transport/{service}/{instance.address}", instance.address,
            ttl=10)
        registrar.register()
        self.registrars.append(registrar)
        return registrar

    def close(self) -> None:
        for registrar in self.registrars:
            registrar.deregister()
        sd.etcd.close_client(self.client)
        self.server.close()


@pytest.fixture(scope="module", params=["consul", "etcd"])
def real_registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    registry: Registry = ConsulRegistry() if request.param == "consul" else EtcdRegistry()
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def registered(real_registry: Registry) -> Iterator[Registry]:
    """The module's registry; what a test registers is deregistered after it."""
    yield real_registry
    real_registry.deregister_all()


@pytest.fixture
def service() -> str:
    return f"users{uuid.uuid4().hex[:8]}"


@pytest.fixture
def http_instances() -> Iterator[Callable[[int], list[Instance]]]:
    made: list[Instance] = []

    def make(count: int) -> list[Instance]:
        made.extend(Instance() for _ in range(count))
        return made[-count:]

    yield make
    for each in made:
        each.kill()


def _churn(registry: Registry, service: str, found: list[Instance],
           make: Callable[[int], list[Instance]], step: Callable[[], None]) -> list[Instance]:
    """Kill one instance, hang another, add two; ``step()`` waits between changes."""
    step()
    found[0].kill()
    step()
    found[1].mode = "hang"
    step()
    added = make(2)
    for each in added:
        registry.register(service, each)
    step()
    return added


def test_sync_zero_failed_idempotent_calls_under_churn(
    no_thread_leaks: None, registered: Registry, service: str,
    http_instances: Callable[[int], list[Instance]],
) -> None:
    real_registry = registered
    found = http_instances(3)
    for each in found:
        real_registry.register(service, each)
    failures: list[BaseException] = []
    calls = 0
    lock = threading.Lock()
    stop = threading.Event()
    with httpx.Client(transport=kitsd.Transport(real_registry.template),
                      base_url=f"http://{service}", timeout=3.0) as client:
        def load() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    response = client.get("/get")
                    if response.status_code != 200:
                        failures.append(AssertionError(response.status_code))
                except Exception as error:
                    failures.append(error)
                with lock:
                    calls += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            def step() -> None:
                before = calls
                wait_for(lambda: calls > before + 50, timeout=15, what="calls")
            added = _churn(real_registry, service, found, http_instances, step)
            wait_for(lambda: all(each.total() > 0 for each in added), timeout=15,
                     what="added instances called")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == []
    assert calls > 150


async def test_async_zero_failed_idempotent_calls_under_churn(
    no_thread_leaks: None, registered: Registry, service: str,
    http_instances: Callable[[int], list[Instance]],
) -> None:
    real_registry = registered
    found = http_instances(3)
    for each in found:
        real_registry.register(service, each)
    failures: list[BaseException] = []
    calls = 0
    stop = asyncio.Event()
    async with httpx.AsyncClient(transport=kitsd.AsyncTransport(real_registry.template),
                                 base_url=f"http://{service}", timeout=3.0) as client:
        async def load() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    response = await client.get("/get")
                    if response.status_code != 200:
                        failures.append(AssertionError(response.status_code))
                except Exception as error:
                    failures.append(error)
                calls += 1

        tasks = [asyncio.create_task(load()) for _ in range(8)]
        try:
            async def step() -> None:
                before = calls
                deadline = time.monotonic() + 15
                while calls <= before + 50:
                    assert time.monotonic() < deadline, "calls stalled"
                    await asyncio.sleep(0.01)

            await step()
            found[0].kill()
            await step()
            found[1].mode = "hang"
            await step()
            added = http_instances(2)
            for each in added:
                await asyncio.to_thread(real_registry.register, service, each)
            deadline = time.monotonic() + 15
            while not all(each.total() > 0 for each in added):
                assert time.monotonic() < deadline, "added instances never called"
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    assert failures == []
    assert calls > 150


def test_posts_never_sent_twice_under_churn(
    real_registry: Registry, service: str, http_instances: Callable[[int], list[Instance]]
) -> None:
    found = http_instances(3)
    for each in found:
        real_registry.register(service, each)
    found[2].mode = "status"  # 503 to everything: must not be retried for a POST
    sent = 0
    with httpx.Client(transport=kitsd.Transport(real_registry.template),
                      base_url=f"http://{service}", timeout=1.0) as client:
        for number in range(300):
            if number == 100:
                found[0].kill()
            if number == 200:
                found[1].mode = "drop"
            with contextlib.suppress(httpx.HTTPError):
                client.post("/order", content=f"order-{number}".encode())
            sent += 1
    bodies = [body for each in found for body in each.bodies]
    assert len(bodies) == len(set(bodies))  # no POST reached instances twice
    assert len(bodies) == sent  # each reached exactly one instance (refused ones retried)
    assert found[2].total() > 0


def test_grpc_through_consul_survives_a_kill(service: str) -> None:
    registry = ConsulRegistry()
    found = [GRPCInstance() for _ in range(3)]
    failures: list[BaseException] = []
    calls = 0
    lock = threading.Lock()
    stop = threading.Event()
    try:
        for each in found:
            registry.register(service, each)
        instancer = sd.instancer_from_url(registry.template.replace("{service}", service))
        with instancer, sd.Endpointer(instancer, sd.grpc.factory(METHOD)) as endpointer:
            wait_for(lambda: len(endpointer.endpoints()) == 3, timeout=10, what="discovery")
            call = lb.retry(3, 5.0, lb.LeastLoaded(endpointer))

            def load() -> None:
                nonlocal calls
                while not stop.is_set():
                    try:
                        call(b"x")
                    except Exception as error:
                        failures.append(error)
                    with lock:
                        calls += 1

            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            try:
                wait_for(lambda: calls > 200, timeout=15, what="load")
                found[0].kill()
                before = calls
                wait_for(lambda: calls > before + 400, timeout=15, what="load after kill")
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
    finally:
        for each in found:
            each.kill()
        registry.close()
    assert failures == []


def test_request_hosts_bounded_against_the_real_registry(
    no_thread_leaks: None, registered: Registry, service: str,
    http_instances: Callable[[int], list[Instance]],
) -> None:
    """16.2: 200 hosts on etcd:// took threads from 1 to 801 (+4 per host, 2.0 s per
    first request); on consul:// about 200 hosts exhausted the agent's per-client
    connection limit, then legitimate services got NoEndpointsError and every
    Consul client on that address HTTP 429."""
    (one,) = http_instances(1)
    registered.register(service, one)
    with httpx.Client(transport=kitsd.Transport(registered.template, max_services=16),
                      base_url=f"http://{service}", timeout=5.0) as client:
        assert client.get("/").status_code == 200
        threads = threading.active_count()
        started = time.monotonic()
        for i in range(250):
            with contextlib.suppress(lb.NoEndpointsError):
                client.get(f"http://host-{i}-{uuid.uuid4().hex[:6]}/")
        per_host = (time.monotonic() - started) / 250
        transport = client._transport
        assert isinstance(transport, kitsd.Transport)
        assert len(transport.services) <= 16
        assert threading.active_count() <= threads + 16 * 2
        assert per_host < 0.5, f"{per_host:.2f} s per first request to an unknown host"
        assert len(transport._discovery.clients) == 1  # type: ignore[attr-defined]
        assert client.get("/").status_code == 200
    # a legitimate service through another client of the same registry still works
    with httpx.Client(transport=kitsd.Transport(registered.template),
                      base_url=f"http://{service}", timeout=5.0) as other:
        assert other.get("/").status_code == 200


@pytest.mark.parametrize("real_registry", ["consul"], indirect=True)  # Consul's own limit
def test_consul_agent_not_exhausted_by_request_hosts(
    no_thread_leaks: None, registered: Registry, service: str,
    http_instances: Callable[[int], list[Instance]],
) -> None:
    """The default bound keeps one transport well under Consul's 200 connections per
    client address (http_max_conns_per_client) whatever the hosts requested."""
    assert isinstance(registered, ConsulRegistry)
    (one,) = http_instances(1)
    registered.register(service, one)
    with httpx.Client(transport=kitsd.Transport(registered.template),
                      base_url=f"http://{service}", timeout=5.0) as client:
        for i in range(260):
            with contextlib.suppress(lb.NoEndpointsError):
                client.get(f"http://host-{i}/")
        answer = httpx.get(f"http://{registered.agent.http_addr}/v1/catalog/services")
        assert answer.status_code == 200  # was 429 for every client of the agent
        assert client.get("/").status_code == 200


def test_discovery_series_hold_no_request_host(
    no_thread_leaks: None, registered: Registry, service: str,
    http_instances: Callable[[int], list[Instance]],
) -> None:
    """16.3 through registry templates: the drivers labelled ``kitsd_instances`` and
    ``kitsd_discovery_errors_total`` with the name they watch, the request's host, and
    the adapters kept one entry per name ever seen (1,000 hosts: ~2,000 series, after
    close too).  Now a watch is ``other`` until its registry vouched for the name, and
    forgotten when it stops."""
    (one,) = http_instances(1)
    registered.register(service, one)
    collector = CollectorRegistry()

    def series() -> list[str]:
        text = generate_latest(collector).decode()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    with kitsd.prometheus.install(collector) as metrics:
        with httpx.Client(transport=kitsd.Transport(registered.template),
                          base_url=f"http://{service}", timeout=5.0) as client:
            assert client.get("/").status_code == 200
            assert client.get("/").status_code == 200
            for i in range(1000):
                with contextlib.suppress(lb.NoEndpointsError):
                    client.get(f"http://h{i}-{uuid.uuid4().hex[:6]}/")
            found = series()
            named = {line.split('service="')[1].split('"')[0]
                     for line in found if 'service="' in line}
            assert named <= {service, "other"}, sorted(named)[:5]
            assert f'kitsd_instances{{service="{service}",state="discovered"}} 1.0' in found
            assert len(found) < 80, len(found)
            assert len(metrics.states.instances()) <= 4  # the service and "other"
        # closed: no watch runs, nothing is kept for any
        assert metrics.states.instances() == {}
        assert not [line for line in series() if line.startswith("kitsd_instances{")]
