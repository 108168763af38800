"""sd.thrift through real Consul and real etcd: three Go Thrift instances registered,
one killed mid-load, 0 failed calls; the killed one's pool closed when it leaves."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kitsd.sd.consul
import kitsd.sd.etcd
from kitsd import lb, sd
from kitsd.sd import thrift
from tests.helpers import async_wait_for, wait_for
from tests.thrift.conftest import StartServers
from tests.thrift.goserver import StoreServer

pytestmark = pytest.mark.integration


class Registry:
    """Registers Go instances in one real registry; ``url`` is the instancer URL."""

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.service = f"store{uuid.uuid4().hex[:8]}"
        self.registrars: dict[str, Any] = {}
        if kind == "consul":
            self.client: Any = kitsd.sd.consul.connect(server.http_addr)
            self.url = f"consul://{server.http_addr}/{self.service}?passing=1"
        else:
            self.client = kitsd.sd.etcd.connect(endpoints=[server.endpoint])
            self.url = f"etcd://{server.endpoint}/kitsd-thrift/{self.service}/"

    def register(self, instance: StoreServer) -> None:
        if self.kind == "consul":
            registrar: Any = kitsd.sd.consul.ConsulRegistrar(
                self.client, self.service, "127.0.0.1", instance.port,
                service_id=f"{self.service}-{instance.port}", ttl=None)
        else:
            registrar = kitsd.sd.etcd.EtcdRegistrar(
                self.client, f"/kitsd-thrift/{self.service}/{instance.address}",
                instance.address, ttl=10)
        registrar.register()
        self.registrars[instance.address] = registrar

    def deregister(self, instance: StoreServer) -> None:
        self.registrars.pop(instance.address).deregister()

    def close(self) -> None:
        for registrar in self.registrars.values():
            registrar.deregister()
        if self.kind == "consul":
            self.client.close()
        else:
            kitsd.sd.etcd.close_client(self.client)


@pytest.fixture(params=["consul", "etcd"])
def registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    server = request.getfixturevalue("kitsd_consul" if request.param == "consul"
                                     else "kitsd_etcd")
    made = Registry(request.param, server)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["buffered", "framed"])
def test_kill_mid_load_zero_failures(registry: Registry, store_servers: StartServers,
                                     store: Any, transport: Any) -> None:
    instances = store_servers(3, transport=transport)
    for instance in instances:
        registry.register(instance)
    failures: list[BaseException] = []
    answered: dict[str, int] = {}
    done = 0
    stop = threading.Event()
    lock = threading.Lock()
    factory = thrift.factory(store.Store, "whoami", transport=transport, timeout=2.0)
    with sd.instancer_from_url(registry.url) as instancer, \
            sd.Endpointer(instancer, factory) as endpointer:
        wait_for(lambda: len(endpointer.endpoints()) == 3, timeout=20, what="3 instances")
        call = lb.retry(3, 5.0, lb.RoundRobin(endpointer))

        def load() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    who = call(None)
                except Exception as error:
                    failures.append(error)
                    who = "failed"
                with lock:
                    done += 1
                    answered[who] = answered.get(who, 0) + 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: done > 300, timeout=30, what="load")
            instances[0].kill()
            before = done
            wait_for(lambda: done > before + 600, timeout=30, what="load after the kill")
            registry.deregister(instances[0])
            wait_for(lambda: len(endpointer.endpoints()) == 2, timeout=20,
                     what="the killed instance leaving")
            before = done
            wait_for(lambda: done > before + 300, timeout=30, what="load after it left")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == []
    assert answered[instances[1].address] > 100
    assert answered[instances[2].address] > 100


async def test_async_kill_mid_load_zero_failures(registry: Registry,
                                                 store_servers: StartServers,
                                                 store: Any) -> None:
    instances = store_servers(3, transport="framed", protocol="compact")
    for instance in instances:
        registry.register(instance)
    failures: list[BaseException] = []
    done = 0
    stop = asyncio.Event()
    factory = thrift.async_factory(store.Store, "whoami", transport="framed",
                                   protocol="compact", timeout=2.0)
    with sd.instancer_from_url(registry.url) as instancer:
        async with sd.Endpointer(instancer, factory) as endpointer:
            await async_wait_for(lambda: len(endpointer.endpoints()) == 3, timeout=20,
                                 what="3 instances")
            call = lb.retry_async(3, 5.0, lb.RoundRobin(endpointer))

            async def load() -> None:
                nonlocal done
                while not stop.is_set():
                    try:
                        await call(None)
                    except Exception as error:
                        failures.append(error)
                    done += 1

            tasks = [asyncio.create_task(load()) for _ in range(16)]
            try:
                await async_wait_for(lambda: done > 300, timeout=30, what="load")
                await asyncio.to_thread(instances[0].kill)
                before = done
                await async_wait_for(lambda: done > before + 600, timeout=30,
                                     what="load after the kill")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    assert failures == []
