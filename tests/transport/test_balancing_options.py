"""The issue-21 options of kitsd.Transport / kitsd.AsyncTransport: zones, slow start,
active health checks (probers the transport owns), subsets and an adaptive
concurrency limit per service — each against local HTTP instances, both drivers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from tests.helpers import wait_for
from tests.lb.health_servers import HealthInstance
from tests.transport.conftest import Driver
from tests.transport.servers import Instance


def answered_by(response: httpx.Response) -> str:
    return response.text.split()[0]  # the instance's port


@pytest.mark.parametrize(("options", "name"), [
    ({"slow_start": 30}, "slow_start"),
    ({"zones": "eu-1"}, "zones"),
    ({"subset": 3}, "subset"),
    ({"health_check": "/health"}, "health_check"),
    ({"limit": 100}, "limit"),
])
@pytest.mark.parametrize("kind", [kitsd.Transport, kitsd.AsyncTransport])
def test_bad_options_name_the_argument(options: dict[str, Any], name: str, kind: Any) -> None:
    with pytest.raises(TypeError) as caught:
        kind("static://127.0.0.1:1", **options)
    assert str(caught.value).startswith(name)


def test_a_balancer_that_cannot_take_an_option_is_refused() -> None:
    def mine(endpointer: Any) -> lb.Balancer:
        return lb.RoundRobin(endpointer)

    with pytest.raises(TypeError, match=r"^zones needs a balancer that takes zones="):
        kitsd.Transport("static://127.0.0.1:1", balancer=mine, zones=lb.Zones("a"))


def test_without_the_options_nothing_is_started(no_thread_leaks: None) -> None:
    transport = kitsd.Transport("static://127.0.0.1:1")
    assert transport._checkers is None
    assert transport.options.balancing() == {}
    transport.close()


def test_zones_keep_calls_in_the_callers_zone(
        driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
        registry: sd.MemoryRegistry) -> None:
    made = instances(6)
    for index, instance in enumerate(made):
        registry.registrar("users", instance.address, info=sd.InstanceInfo(
            meta={"zone": "ab"[index % 2]})).register()
    client = driver(registry, zones=lb.Zones("b"))
    answers = Counter(answered_by(client.request("GET", "/x")) for _ in range(60))
    assert set(answers) == {str(instance.port) for instance in made[1::2]}


def test_subsets_through_the_transport(
        driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
        registry: sd.MemoryRegistry) -> None:
    made = sorted(instances(6), key=lambda instance: instance.address)
    for instance in made:
        registry.registrar("users", instance.address).register()
    client = driver(registry, subset=lb.Aperture(size=2, client=2, clients=3))
    answers = Counter(answered_by(client.request("GET", "/x")) for _ in range(40))
    assert set(answers) == {str(instance.port) for instance in made[4:]}


def test_slow_start_through_the_transport(
        driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
        registry: sd.MemoryRegistry) -> None:
    made = instances(4)
    for instance in made[:3]:
        registry.registrar("users", instance.address).register()
    client = driver(registry, slow_start=lb.SlowStart(window=600.0, min_weight_percent=1.0),
                    balancer=lb.RoundRobin)
    client.request("GET", "/x")  # the first set: warm
    registry.registrar("users", made[3].address).register()
    answers = Counter(answered_by(client.request("GET", "/x")) for _ in range(300))
    assert answers[str(made[3].port)] <= 10  # 1 % of a fair quarter at first


@pytest.fixture
def health_instances(no_thread_leaks: None) -> Iterator[list[HealthInstance]]:
    made = [HealthInstance() for _ in range(3)]
    yield made
    for instance in made:
        instance.kill()


def test_health_checks_through_the_transport(
        driver: Callable[..., Driver], health_instances: list[HealthInstance],
        registry: sd.MemoryRegistry) -> None:
    for instance in health_instances:
        registry.registrar("users", instance.address).register()
    check = lb.HttpCheck(path="/health", interval=0.05, timeout=0.05, unhealthy_threshold=1)
    client = driver(registry, health_check=check)
    sick = health_instances[0]
    sick.health_status = 503
    client.request("GET", "/app")  # the service's stack (and its probers) start
    checkers = client.transport._checkers
    assert checkers is not None
    wait_for(lambda: checkers.probes == 3, what="one prober per instance")
    wait_for(lambda: sick.health_checks() >= 2, what="the sick one checked")
    sick.hits.clear()
    for _ in range(30):
        assert client.request("GET", "/app").status_code == 200
    assert sick.hits["/app"] == 0
    client.close()
    assert checkers.probes == 0  # the transport closed its probers


def test_a_limit_per_service_refuses_past_it(
        driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
        registry: sd.MemoryRegistry) -> None:
    (slow,) = instances(1)
    registry.registrar("users", slow.address).register()
    client = driver(registry, limit=lb.AIMDLimit(initial=1, minimum=1, maximum=1))
    assert client.request("GET", "/x").status_code == 200
    slow.mode = "hang"
    if client.kind == "sync":
        def hold() -> None:
            with contextlib.suppress(httpx.HTTPError):  # a hung instance answers nothing
                client.request("GET", "/held")

        held = threading.Thread(target=hold)
        held.start()
        wait_for(lambda: slow.total() >= 2, what="the held call in flight")
        with pytest.raises(lb.LimitExceeded):
            client.request("GET", "/refused")
        slow.release.set()
        held.join(10)
    else:
        async def scenario() -> None:
            held = asyncio.ensure_future(client.client.get("/held"))
            await asyncio.to_thread(wait_for, lambda: slow.total() >= 2)
            with pytest.raises(lb.LimitExceeded):
                await client.client.get("/refused")
            slow.release.set()
            with contextlib.suppress(httpx.HTTPError):  # a hung instance answers nothing
                await held

        client.runner.run(scenario())
    slow.mode = "ok"
    assert client.request("GET", "/after").status_code == 200
