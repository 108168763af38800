"""The issue-21 options of kitsd.Transport / kitsd.AsyncTransport: zones, slow start,
active health checks (probers the transport owns), subsets and an adaptive
concurrency limit per service — each against local HTTP instances, both drivers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

import kitsd
from kitsd import lb, sd
from tests.helpers import async_wait_for, wait_for
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


def test_slow_start_is_on_by_default_for_balancers_that_take_it() -> None:
    given: list[dict[str, Any]] = []

    def mine(endpointer: Any, **options: Any) -> lb.Balancer:
        given.append(options)
        return lb.RoundRobin(endpointer, **options)

    def plain(endpointer: Any) -> lb.Balancer:  # takes no slow_start=: built without it
        given.append({})
        return lb.RoundRobin(endpointer)

    registry = sd.MemoryRegistry()
    registry.registrar("users", "127.0.0.1:1").register()
    source = sd.Endpointer(registry.instancer("users"), lambda instance: lambda request: request)
    own = lb.SlowStart(window=5.0)
    for options, expected in (({}, kitsd.transport.SLOW_START), ({"slow_start": None}, None),
                              ({"slow_start": own}, own)):
        given.clear()
        transport = kitsd.Transport(registry, balancer=mine, outlier_detection=None, **options)
        transport._balancer("users", source)
        transport.close()
        assert given[0].get("slow_start") == expected, options
    assert lb.SlowStart() == kitsd.transport.SLOW_START
    given.clear()
    transport = kitsd.Transport(registry, balancer=plain)
    transport._balancer("users", source)
    transport.close()
    source.close()
    assert given == [{}]
    with pytest.raises(TypeError, match=r"^slow_start must be an lb.SlowStart, None or "):
        kitsd.Transport(registry, slow_start=lb.Zones("a"))  # type: ignore[arg-type]


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


def until(client: Driver, predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate``; an AsyncTransport's probes run on its event loop, which
    runs only while the async driver's runner does: wait there."""
    if client.kind == "sync":
        wait_for(predicate, what=what)
    else:
        client.runner.run(async_wait_for(predicate, what=what))


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
    # a timeout a loaded machine meets: a healthy instance's check must not fail
    check = lb.HttpCheck(path="/health", interval=0.25, timeout=0.25, unhealthy_threshold=1)
    client = driver(registry, health_check=check)
    try:
        sick = health_instances[0]
        sick.health_status = 503
        client.request("GET", "/app")  # the service's stack (and its probers) start
        checkers = client.transport._checkers
        assert checkers is not None
        wait_for(lambda: checkers.probes == 3, what="one prober per instance")
        until(client, lambda: all(instance.health_checks() >= 2
                                  for instance in health_instances), what="checks")
        sick.hits.clear()
        for _ in range(30):
            assert client.request("GET", "/app").status_code == 200
        assert sick.hits["/app"] == 0
    finally:
        client.close()
    assert checkers.probes == 0  # the transport closed its probers


def test_https_health_checks_go_through_the_inner_transport_under_the_service_name(
        driver: Callable[..., Driver], registry: sd.MemoryRegistry,
        no_thread_leaks: None, tmp_path: Path) -> None:
    # The instances' certificates name the service ("users"), not their address, and
    # they want a client certificate: a check passes only with the inner transport's
    # verify= and certificate, and the service's name for SNI and verification.
    ca = trustme.CA()
    issued = ca.issue_cert("users")
    client_pem = str(tmp_path / "client.pem")
    ca.issue_cert("client.kitsd.test").private_key_and_cert_chain_pem.write_to_path(client_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    issued.configure_cert(server)
    made = [HealthInstance(tls=server) for _ in range(3)]
    client: Driver | None = None
    try:
        for instance in made:
            registry.registrar("users", instance.address).register()
        sick = made[0]
        sick.health_status = 503
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
        verify.load_cert_chain(client_pem)
        inner = (httpx.HTTPTransport(verify=verify) if driver.kind == "sync"  # type: ignore[attr-defined]
                 else httpx.AsyncHTTPTransport(verify=verify))
        check = lb.HttpCheck(path="/health", scheme="https", interval=0.25, timeout=0.25,
                             unhealthy_threshold=1)
        client = driver(registry, base_url="https://users", health_check=check,
                        transport=inner, outlier_detection=None)
        assert client.request("GET", "/app").status_code == 200  # the stack starts
        checkers = client.transport._checkers
        expected = lb.HealthCheckers if client.kind == "sync" else lb.AsyncHealthCheckers
        assert type(checkers) is expected
        # every instance, over TLS: the sick one fails its check
        until(client, lambda: all(instance.health_checks() >= 2 for instance in made),
              what="checks over TLS")
        if client.kind == "async":  # the probes ran on the event loop, on no thread
            assert not [thread for thread in threading.enumerate()
                        if thread.name.startswith("kitsd-health")]
        for instance in made:
            instance.hits.clear()
        answers = [client.request("GET", "/app").status_code for _ in range(30)]
        assert answers == [200] * 30
        assert sick.hits["/app"] == 0  # out of rotation: its check failed
        assert sum(instance.hits["/app"] for instance in made[1:]) == 30
    finally:
        if client is not None:
            client.close()
        for instance in made:
            instance.kill()
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
