"""Edges of the one-line client, each once a reported defect: the sync deadline
against a trickling server (16.4), odd ``Retry-After`` values (16.9), the
templates the README lists (16.12, 15.4: static, consuls), a port in the request
URL and a missing driver (15.4), and errors that say why there are no endpoints
(15.4: registry down vs no instances)."""

from __future__ import annotations

import importlib.util
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from kitsd.core.errors import MisuseError
from tests.sd.test_http_deadline import TrickleServer
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance

Make = Callable[..., Driver]
Instances = Callable[[int], list[Instance]]


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer(headers_too=True)
    yield server
    server.close()


def test_call_deadline_bounds_a_trickling_server(
    driver: Make, trickle: TrickleServer, registry: sd.MemoryRegistry
) -> None:
    """16.4: headers trickled one byte per 0.1 s took 4.0 s against a 1 s timeout
    through the sync transport (async stopped at 1.01 s)."""
    registry.registrar("users", trickle.instance).register()
    client = driver(registry, max_attempts=1)
    start = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.request("GET", "/", timeout=1.0)
    assert time.monotonic() - start < 2.0


def test_a_given_inner_transport_is_left_as_it_is(registry: sd.MemoryRegistry) -> None:
    inner = httpx.HTTPTransport()
    pool_backend = inner._pool._network_backend
    with kitsd.Transport(registry, transport=inner):
        assert inner._pool._network_backend is pool_backend


@pytest.mark.parametrize("value", ["²", "١٢", "1.5", "-3", "Mon, 32 Foo 2020 99:99:99 GMT"])
def test_odd_retry_after_returns_the_response(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry, value: str
) -> None:
    """16.9: ``Retry-After: ²`` raised ValueError (past ``except httpx.HTTPError``)."""
    (one,) = instances(1)
    one.mode = "status"
    one.headers = {"Retry-After": value}
    register(registry, one)
    client = driver(registry, max_attempts=2)
    response = client.request("GET", "/", timeout=5)
    assert response.status_code == 503
    assert one.total() == 2  # retried at once: the header was ignored


def test_static_template_serves_every_service(driver: Make, instances: Instances) -> None:
    """15.4: ``static://h1:p1,h2:p2`` was refused (``must contain {service}``)."""
    first, second = instances(2)
    client = driver(f"static://{first.address},{second.address}")
    ports = {client.request("GET", f"http://{name}/").text.split(" ")[0]
             for name in ("users", "orders", "users", "orders")}
    assert ports == {str(first.port), str(second.port)}


def test_static_template_with_the_service_substituted(driver: Make,
                                                      instances: Instances) -> None:
    (one,) = instances(1)
    client = driver(f"static://{{service}}:{one.port}")
    assert client.request("GET", "http://127.0.0.1/").status_code == 200
    with pytest.raises(MisuseError):
        kitsd.Transport("static://")


def test_consuls_template_accepted() -> None:
    """16.12: ``consuls://`` templates were refused (``unknown scheme 'consuls'``)."""
    kitsd.Transport("consuls://127.0.0.1:8501/{service}").close()
    kitsd.Transport("etcds://127.0.0.1:2379/services/{service}/?ca=/tmp/ca.pem").close()
    with pytest.raises(MisuseError, match="consuls://"):
        kitsd.Transport("consul://127.0.0.1:8500/{service}?ca=/tmp/ca.pem")


@pytest.mark.parametrize(("template", "shown"), [
    ("consul://tok:S3CRET@127.0.0.1:1/{service}", "consul://***@127.0.0.1:1/{service}"),
    ("zk://127.0.0.1:1/{service}?bogus=1", "zk://127.0.0.1:1/{service}?bogus=***"),
    ("static://{service}:S3CRET", "'{service}:***'"),
])
def test_a_bad_template_is_shown_as_written(template: str, shown: str) -> None:
    """A template is checked with a stand-in service name; its errors showed that name
    (``consul://***@127.0.0.1:1/kitsd-probe``), never written by the user."""
    with pytest.raises(MisuseError) as caught:
        kitsd.Transport(template)
    assert shown in str(caught.value)
    assert "kitsd-probe" not in str(caught.value)
    assert "S3CRET" not in str(caught.value)


def test_a_port_in_the_request_url_is_refused(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """15.4: ``http://users:9999/`` silently went to the registry's port."""
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry)
    with pytest.raises(MisuseError, match="port 9999"):
        client.request("GET", "http://users:9999/")
    assert client.request("GET", "http://users:80/").status_code == 200  # the default port
    assert one.total() == 1


@pytest.mark.parametrize(("template", "library", "extra"), [
    ("etcd://127.0.0.1:2379/services/{service}/", "pyetcd", "etcd"),
    ("consul://127.0.0.1:8500/{service}", "consul", "consul"),
    ("zk://127.0.0.1:2181/services/{service}", "kazoo", "zk"),
    ("dnssrv://_{service}._tcp.example.com", "dns", "dns"),
])
def test_a_missing_driver_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, template: str, library: str, extra: str
) -> None:
    """15.4: a template whose driver is missing failed at the first request."""
    real = importlib.util.find_spec
    hidden = {library, "etcd3"}

    def find_spec(name: str, *args: Any) -> Any:
        return None if name.split(".")[0] in hidden else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MisuseError, match=rf"pip install 'kitsd\[{extra}\]'"):
        kitsd.Transport(template)
    with pytest.raises(MisuseError, match=rf"pip install 'kitsd\[{extra}\]'"):
        kitsd.AsyncTransport(template)


def test_no_instances_error_says_the_registry_answered(
    driver: Make, registry: sd.MemoryRegistry
) -> None:
    client = driver(registry)
    with pytest.raises(lb.NoEndpointsError) as caught:
        client.request("GET", "http://users/")
    first_line = str(caught.value).splitlines()[0]
    assert first_line == ("no endpoints available for service 'users': the registry "
                          "answered: no instances of 'users'")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", ["etcd", "consul", "zk", "dnssrv"])
def test_registry_down_error_names_the_registry_and_its_error(driver: Make, scheme: str) -> None:
    """15.4: a registry on a closed port looked exactly like an unknown service."""
    port = _closed_port()
    template = {
        "etcd": f"etcd://u:S3CRET@127.0.0.1:{port}/services/{{service}}/?timeout=0.5",
        "consul": f"consul://127.0.0.1:{port}/{{service}}",
        "zk": f"zk://127.0.0.1:{port}/services/{{service}}?timeout=1",
        "dnssrv": f"dnssrv://_{{service}}._tcp.example.com?server=127.0.0.1:{port}&timeout=0.3",
    }[scheme]
    client = driver(template)
    start = time.monotonic()
    with pytest.raises((lb.NoEndpointsError, httpx.TimeoutException)) as caught:
        client.request("GET", "http://users/", timeout=3)
    elapsed = time.monotonic() - start
    first_line = str(caught.value).splitlines()[0]
    # what, where (redacted) and why: "... 'users': the registry is unreachable:
    # consul://127.0.0.1:PORT/{service}: RegistryUnavailableError: ... cannot connect"
    assert first_line.startswith("no endpoints available for service 'users': the "
                                 "registry is unreachable: "), first_line
    assert "the registry answered" not in first_line
    assert f"127.0.0.1:{port}" in first_line
    assert "RegistryUnavailableError: " in first_line
    assert "S3CRET" not in str(caught.value)
    assert elapsed < 3.5


def test_one_retry_endpoint_per_service_whatever_the_timeouts(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """16.14: one retry endpoint per distinct request timeout; with hedge= each owned a
    thread pool (200 distinct timeouts: 64 cached endpoints, 65 threads)."""
    import threading

    (one,) = instances(1)
    register(registry, one)
    client = driver(registry, hedge=lb.Hedge(delay=0.5))
    assert client.request("GET", "/", timeout=5).status_code == 200
    threads = threading.active_count()
    made: list[object] = []
    stack = client.transport._stacks["users"]
    real = stack._make_retry

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return real(*args, **kwargs)

    stack._make_retry = counting
    for i in range(100):
        assert client.request("GET", "/", timeout=5 + i / 100).status_code == 200
    assert made == []
    assert threading.active_count() <= threads + 2


def test_a_request_timeout_longer_than_the_default_is_honoured(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """The request's own timeout bounds the call, longer or shorter than ``timeout=``."""
    (one,) = instances(1)
    one.mode = "slow"
    one.delay = 0.6
    register(registry, one)
    client = driver(registry, timeout=0.2, max_attempts=1)
    assert client.request("GET", "/", timeout=3).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        client.request("GET", "/", timeout=0.3)


@pytest.mark.parametrize("balancer", [None, lb.RoundRobin, lb.LeastLoaded],
                         ids=["default", "RoundRobin", "LeastLoaded"])
def test_an_instance_answering_503_to_everything_is_ejected_by_default(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry, balancer: Any
) -> None:
    """Issue 16 (defaults): one of three instances answering 503 to every request kept
    32 % of the traffic through a default Transport (each one a retry).  Target: at
    most 5 % of the attempts after its first 20."""
    bad, *good = instances(3)
    bad.mode = "status"
    register(registry, bad, *good)
    options = {} if balancer is None else {"balancer": balancer}
    client = driver(registry, **options)
    mark: tuple[int, int] | None = None
    for _ in range(400):
        assert client.request("GET", "/").status_code == 200
        if mark is None and bad.total() >= 20:
            mark = (bad.total(), bad.total() + sum(each.total() for each in good))
    bad_after = bad.total() - (mark[0] if mark else 0)
    all_after = bad.total() + sum(each.total() for each in good) - (mark[1] if mark else 0)
    assert bad_after <= 0.05 * all_after, f"{bad_after} of {all_after} attempts to the bad one"


def test_outlier_detection_none_still_disables_ejection(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    bad, good = instances(2)
    bad.mode = "status"
    register(registry, bad, good)
    client = driver(registry, balancer=lb.RoundRobin, outlier_detection=None)
    for _ in range(40):
        assert client.request("GET", "/").status_code == 200
    assert bad.total() >= 19  # round robin's share: every other call starts there


def test_every_attempt_carries_its_trace_context(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """Issue 16 (defaults): after kitsd.otel.install(), a request through the transport
    inside a span carried no traceparent unless the user passed event hooks."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    import kitsd.otel

    bad, good = instances(2)
    bad.mode = "status"
    register(registry, bad, good)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    client = driver(registry, balancer=lb.RoundRobin, outlier_detection=None)
    with kitsd.otel.install(tracer_provider=provider, attempt_spans=True):
        for _ in range(2):  # round robin: one of the two calls meets the 503 first
            if client.kind == "async":
                async def call() -> httpx.Response:
                    with tracer.start_as_current_span("outer"):
                        response: httpx.Response = await client.client.get("/")
                        return response
                assert client.runner.run(call()).status_code == 200
            else:
                with tracer.start_as_current_span("outer"):
                    assert client.request("GET", "/").status_code == 200
    finished = spans.get_finished_spans()
    attempts = {f"{span.context.span_id:016x}": span for span in finished
                if span.kind is SpanKind.CLIENT}
    outer_traces = {f"{span.context.trace_id:032x}" for span in finished
                    if span.name == "outer"}
    sent = [headers.get("traceparent") for headers in bad.seen_headers + good.seen_headers]
    assert len(sent) >= 3, sent  # two calls, at least one retried
    for header in sent:
        assert header is not None
        _, trace_id, parent_id, _ = header.split("-")
        assert trace_id in outer_traces
        assert parent_id in attempts  # each attempt's own span, not the call's
    assert len({header.split("-")[2] for header in sent if header}) == len(sent)
    provider.shutdown()


def test_the_httpx_instrumentation_turned_on_later_sees_every_attempt(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """An instance endpoint made before HTTPXClientInstrumentor().instrument() must
    still go through the instrumented handle_request: kitsd leaves the CLIENT spans and
    the traceparent to the instrumentation once it is on, so an attempt that bypassed it
    (a handle_request bound when the endpoint was made) carried neither."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    import kitsd.otel

    (instance,) = instances(1)
    register(registry, instance)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    client = driver(registry)
    with kitsd.otel.install(tracer_provider=provider):
        assert client.request("GET", "/").status_code == 200  # the endpoint is made here
        instrumentor = HTTPXClientInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            assert client.request("GET", "/").status_code == 200
        finally:
            instrumentor.uninstrument()
        assert client.request("GET", "/").status_code == 200  # and left again
    finished = spans.get_finished_spans()
    calls = [span for span in finished if span.kind is SpanKind.INTERNAL]
    http = [span for span in finished if span.kind is SpanKind.CLIENT]
    assert len(calls) == 3
    # kitsd's own attempt spans for the 1st and 3rd calls, the instrumentation's for the 2nd
    assert sorted(span.name for span in http) == ["GET", "users attempt", "users attempt"]
    (instrumented,) = [span for span in http if span.name == "GET"]
    assert instrumented.parent is not None
    assert instrumented.parent.span_id in {span.context.span_id for span in calls}
    sent = [headers.get("traceparent") for headers in instance.seen_headers]
    assert len(sent) == 3, sent
    assert all(sent), sent
    assert str(sent[1]).split("-")[2] == f"{instrumented.context.span_id:016x}"
    provider.shutdown()
