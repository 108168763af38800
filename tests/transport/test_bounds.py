"""Request hosts cannot make the transport watch without limit (issue 16.2), nor
name metric series (16.3): whoever controls a request's host (a proxy, a webhook
URL, a followed redirect) names a service."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import kitsd
import kitsd.otel
import kitsd.prometheus
from kitsd import lb, sd
from kitsd.sd.instancer import Broadcaster
from kitsd.transport import TooManyServicesError
from tests.helpers import async_wait_for, wait_for
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance

Make = Callable[..., Driver]
Instances = Callable[[int], list[Instance]]


def _try(client: Driver, url: str) -> None:
    with contextlib.suppress(lb.NoEndpointsError):
        client.request("GET", url)


class Recorder:
    """``discover`` over a MemoryRegistry that counts the instancers made and stopped."""

    def __init__(self, registry: sd.MemoryRegistry) -> None:
        self.registry = registry
        self.made: list[str] = []
        self.stopped: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        instancer = self.registry.instancer(service)
        stop = instancer.stop

        def counted() -> None:
            with self.lock:
                self.stopped.append(service)
            stop()

        instancer.stop = counted  # type: ignore[method-assign]
        with self.lock:
            self.made.append(service)
        return instancer

    def running(self) -> int:
        with self.lock:
            return len(self.made) - len(self.stopped)


def test_request_hosts_watched_at_most_max_services(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry, max_services=10)
    assert client.request("GET", "http://users/").status_code == 200
    users = client.transport._stacks["users"]
    for i in range(300):
        _try(client, f"http://host-{i}/")
        assert len(client.transport.services) <= 10
    # the legitimate service kept its watch: the empty ones made room first
    assert client.transport._stacks["users"] is users
    assert client.request("GET", "http://users/").status_code == 200
    client.close()
    assert client.transport.services == []


def test_memory_registry_keeps_nothing_for_names_asked_about(
    driver: Make, registry: sd.MemoryRegistry
) -> None:
    """16.2: 5,000 one-off hosts left 5,000 stacks (+61 MiB) and 5,000 broadcasters
    after close()."""
    client = driver(registry, max_services=20)
    _try(client, "http://warm-up/")
    gc.collect()
    before = sum(isinstance(each, Broadcaster) for each in gc.get_objects())
    tracemalloc.start()
    for i in range(1000):
        _try(client, f"http://host-{i}/")
    during, _ = tracemalloc.get_traced_memory()
    client.close()
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(isinstance(each, Broadcaster) for each in gc.get_objects()) <= before
    assert during < 8 * 2**20, f"{during} bytes held with 1000 hosts seen"
    assert after < 1 * 2**20, f"{after} bytes left after close()"


def test_all_services_busy_is_a_clear_error(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    hung, good = instances(2)
    hung.mode = "hang"
    register(registry, hung, service="a")
    register(registry, hung, service="b")
    register(registry, good, service="c")
    client = driver(registry, max_services=2, max_attempts=1)
    if client.kind == "sync":
        calls = [threading.Thread(target=_try_timeout, args=(client, url))
                 for url in ("http://a/", "http://b/")]
        for call in calls:
            call.start()
        wait_for(lambda: hung.total() == 2)
        with pytest.raises(TooManyServicesError, match=r"max_services=2") as caught:
            client.request("GET", "http://c/")
        hung.release.set()
        for call in calls:
            call.join(10)
    else:
        async def scenario() -> BaseException | None:
            tasks = [asyncio.create_task(client.client.get(url, timeout=5))
                     for url in ("http://a/", "http://b/")]
            await async_wait_for(lambda: hung.total() == 2)
            found: BaseException | None = None
            try:
                await client.client.get("http://c/")
            except TooManyServicesError as error:
                found = error
            hung.release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return found

        error = client.runner.run(scenario())
        assert isinstance(error, TooManyServicesError)
        caught = pytest.ExceptionInfo.from_exception(error)
    assert caught.value.service == "c"
    # once the calls are done, the idle ones make room
    assert client.request("GET", "http://c/").status_code == 200


def _try_timeout(client: Driver, url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        client.request("GET", url, timeout=5)


def test_services_allow_list(driver: Make, instances: Instances,
                             registry: sd.MemoryRegistry) -> None:
    (one,) = instances(1)
    register(registry, one)
    register(registry, one, service="orders")
    recorder = Recorder(registry)
    client = driver(recorder, services=["users"])
    assert client.request("GET", "http://users/").status_code == 200
    with pytest.raises(lb.NoEndpointsError, match="not one of the transport's services="):
        client.request("GET", "http://orders/")
    assert recorder.made == ["users"]  # nothing was started for orders


def test_a_service_without_instances_does_not_keep_its_watch(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (one,) = instances(1)
    register(registry, one)
    recorder = Recorder(registry)
    client = driver(recorder, idle_timeout=0.3)  # an empty one goes after min(0.3, 10) s
    _try(client, "http://nobody/")
    assert "nobody" in client.transport.services
    time.sleep(0.4)
    wait_for(lambda: client.request("GET", "http://users/").status_code == 200
             and "nobody" not in client.transport.services, timeout=5)
    assert recorder.stopped == ["nobody"]


def test_idle_services_closed(driver: Make, instances: Instances,
                              registry: sd.MemoryRegistry) -> None:
    (one,) = instances(1)
    register(registry, one, service="a")
    register(registry, one, service="b")
    recorder = Recorder(registry)
    client = driver(recorder, idle_timeout=0.5)
    assert client.request("GET", "http://a/").status_code == 200
    deadline = time.monotonic() + 5
    while "a" in client.transport.services and time.monotonic() < deadline:
        assert client.request("GET", "http://b/").status_code == 200
        time.sleep(0.05)
    assert client.transport.services == ["b"]
    assert recorder.stopped == ["a"]
    assert client.request("GET", "http://a/").status_code == 200  # comes back on demand


# --- metric labels (16.3) ----------------------------------------------------------


@pytest.fixture
def scrape() -> Iterator[Callable[[], str]]:
    collector = CollectorRegistry()
    with kitsd.prometheus.install(collector):
        yield lambda: generate_latest(collector).decode()


def _services_named(text: str) -> set[str]:
    return {line.split('service="')[1].split('"')[0]
            for line in text.splitlines() if 'service="' in line}


def test_prometheus_labels_only_services_the_registry_knows(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry,
    scrape: Callable[[], str],
) -> None:
    """16.3: 1,000 hosts added 20,000 Prometheus series."""
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry)
    assert client.request("GET", "http://users/").status_code == 200
    series = len(scrape().splitlines())
    for i in range(200):
        _try(client, f"http://host-{i}/")
    text = scrape()
    assert _services_named(text) <= {"users", "other"}
    assert len(text.splitlines()) <= series + 40  # one "other" label set, not 200


def test_allow_listed_services_are_labelled(
    driver: Make, registry: sd.MemoryRegistry, scrape: Callable[[], str],
) -> None:
    client = driver(registry, services=["users", "orders"])
    _try(client, "http://orders/")
    assert "orders" in _services_named(scrape())


def test_otel_spans_and_attributes_name_only_admitted_services(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry,
) -> None:
    (one,) = instances(1)
    register(registry, one)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with kitsd.otel.install(tracer_provider=provider):
        client = driver(registry)
        assert client.request("GET", "http://users/").status_code == 200
        for i in range(50):
            _try(client, f"http://host-{i}/")
    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    values = {span.attributes.get("kitsd.service") for span in finished if span.attributes}
    assert names <= {"users", "users attempt", "other", "other attempt"}
    assert values <= {"users", "other", None}
    provider.shutdown()


def test_concurrent_first_requests_build_one_stack(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """One caller builds a new service's stack; the others wait for it (a duplicate
    meant a second watch, and per-instance breakers reported twice)."""
    (one,) = instances(1)
    register(registry, one)
    recorder = Recorder(registry)
    client = driver(recorder)
    if client.kind == "sync":
        barrier = threading.Barrier(8)

        def call() -> None:
            barrier.wait()
            assert client.request("GET", "http://users/").status_code == 200

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    else:
        async def calls() -> list[httpx.Response]:
            return list(await asyncio.gather(
                *(client.client.get("http://users/") for _ in range(8))))

        assert all(r.status_code == 200 for r in client.runner.run(calls()))
    assert one.total() == 8
    assert recorder.made == ["users"]
