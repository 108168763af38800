"""kitsd.otel: spans and measurements read back from the OpenTelemetry SDK's
in-memory exporter and reader after scripted scenarios."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import kitsd.otel
import kitsd.sd.http
from kitsd import lb, sd
from kitsd.core import observe
from kitsd.demo_server import DemoInstance
from tests.observe.scenarios import (
    DOWN,
    UP,
    breaker_opening,
    discovery_with_errors,
    retry_with_ejection,
)


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def value(self, name: str, **attributes: Any) -> Any:
        matching = [p for p in self.points(name) if dict(p.attributes) == attributes]
        assert len(matching) <= 1, matching
        if not matching:
            return None
        point = matching[0]
        return point.count if hasattr(point, "count") else point.value


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    with kitsd.otel.install(meter_provider=telemetry.meter_provider,
                            tracer_provider=telemetry.tracer_provider, attempt_spans=None):
        yield telemetry
    assert observe.HUB.observers == ()
    telemetry.meter_provider.shutdown()
    telemetry.tracer_provider.shutdown()


def test_a_retry_makes_a_call_span_with_one_child_per_attempt(telemetry: Telemetry) -> None:
    retry_with_ejection("users")
    spans = telemetry.finished()
    calls = [s for s in spans if s.kind is SpanKind.INTERNAL]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.name for s in calls] == ["users", "users"]
    assert [s.name for s in attempts] == ["users attempt"] * 3
    first_call = calls[0]
    first, retried, only = attempts
    for attempt in (first, retried):
        assert attempt.parent is not None
        assert attempt.parent.span_id == first_call.context.span_id
        assert attempt.context.trace_id == first_call.context.trace_id
    assert only.parent is not None
    assert only.parent.span_id == calls[1].context.span_id
    assert first.attributes is not None
    assert retried.attributes is not None
    assert (first.attributes["server.address"], first.attributes["server.port"]) == (
        "127.0.0.1", int(DOWN.rsplit(":", 1)[1]))
    assert "http.request.resend_count" not in first.attributes
    assert first.attributes["error.type"] == "ConnectionRefusedError"
    assert first.status.status_code is StatusCode.ERROR
    assert retried.attributes["http.request.resend_count"] == 1
    assert retried.status.status_code is StatusCode.UNSET
    assert first_call.attributes is not None
    assert (first_call.attributes["kitsd.attempts"], first_call.attributes["kitsd.outcome"]) == (
        2, "success")


def test_a_retry_and_an_ejection_are_measured(telemetry: Telemetry) -> None:
    retry_with_ejection("users")
    down_port, up_port = (int(i.rsplit(":", 1)[1]) for i in (DOWN, UP))
    duration = "http.client.request.duration"
    assert telemetry.value(duration, **{
        "kitsd.service": "users", "server.address": "127.0.0.1", "server.port": down_port,
        "error.type": "ConnectionRefusedError"}) == 1
    assert telemetry.value(duration, **{
        "kitsd.service": "users", "server.address": "127.0.0.1", "server.port": up_port}) == 2
    assert telemetry.value("kitsd.call.duration",
                           **{"kitsd.service": "users", "kitsd.outcome": "success"}) == 2
    assert telemetry.value("kitsd.retries", **{"kitsd.service": "users"}) == 1
    assert telemetry.value("kitsd.ejections",
                           **{"kitsd.service": "users", "kitsd.instance": DOWN}) == 1
    assert telemetry.value("kitsd.instances", **{
        "kitsd.service": "users", "kitsd.instance.state": "ejected"}) == 1


def test_a_breaker_opening_is_measured(telemetry: Telemetry) -> None:
    cb = breaker_opening("payments")
    state = "kitsd.breaker.state"
    assert telemetry.value(state, **{"kitsd.breaker": "payments",
                                     "kitsd.breaker.state": "open"}) == 1
    assert telemetry.value(state, **{"kitsd.breaker": "payments",
                                     "kitsd.breaker.state": "closed"}) == 0
    del cb


def test_a_discovery_error_is_measured(telemetry: Telemetry) -> None:
    discovery_with_errors("orders")
    assert telemetry.value("kitsd.discovery.errors", **{
        "kitsd.registry.kind": "memory", "kitsd.service": "orders"}) == 2
    assert telemetry.value("kitsd.instances", **{
        "kitsd.service": "orders", "kitsd.instance.state": "discovered"}) == 2


def test_sd_http_requests_carry_the_attempt_span_as_traceparent(telemetry: Telemetry) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent", ""))
        return httpx.Response(200, json={"ok": True})

    factory: Any = sd.http.factory(
        "GET", "/", encode=lambda request: {}, decode=lambda response: response.json(),
        client_kwargs=kitsd.otel.client_kwargs({"transport": httpx.MockTransport(handler)}))
    with sd.Endpointer(sd.FixedInstancer([UP]), factory) as endpointer:
        call = lb.retry(1, 5.0, lb.RoundRobin(endpointer), name="users")
        assert call(None) == {"ok": True}
    (attempt,) = [s for s in telemetry.finished() if s.kind is SpanKind.CLIENT]
    version, trace_id, span_id, flags = seen[0].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == attempt.context.trace_id
    assert int(span_id, 16) == attempt.context.span_id


async def test_async_sd_http_requests_carry_traceparent(telemetry: Telemetry) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent", ""))
        return httpx.Response(200, json={"ok": True})

    factory: Any = sd.http.async_factory(
        "GET", "/", encode=lambda request: {}, decode=lambda response: response.json(),
        client_kwargs=kitsd.otel.client_kwargs({"transport": httpx.MockTransport(handler)},
                                               asynchronous=True))
    with sd.Endpointer(sd.FixedInstancer([UP]), factory) as endpointer:
        call = lb.retry_async(1, 5.0, lb.RoundRobin(endpointer), name="users")
        assert await call(None) == {"ok": True}
        for endpoint in endpointer.endpoints():
            await endpoint.aclose()
    (attempt,) = [s for s in telemetry.finished() if s.kind is SpanKind.CLIENT]
    assert int(seen[0].split("-")[2], 16) == attempt.context.span_id


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_with_the_httpx_instrumentation_kitsd_makes_no_attempt_spans(
    telemetry: Telemetry,
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    server = DemoInstance()
    dead = closed_port()
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider,
                            meter_provider=telemetry.meter_provider,
                            request_hook=kitsd.otel.request_hook)
    try:
        assert kitsd.otel.httpx_instrumented()
        factory: Any = sd.http.factory("GET", "/", encode=lambda request: {},
                                  decode=lambda response: response.json()["instance"],
                                  client_kwargs=kitsd.otel.client_kwargs())
        instances = sorted([dead, server.instance])
        with sd.Endpointer(sd.FixedInstancer(instances), factory) as endpointer:
            balancer = lb.RoundRobin(endpointer)
            call = lb.retry(2, 5.0, balancer, name="users")
            while True:  # until a call meets the dead instance first
                assert call(None) == server.instance
                if balancer.ejected():
                    break
    finally:
        instrumentor.uninstrument()
        server.kill()
    spans = telemetry.finished()
    assert [s for s in spans if s.name == "users attempt"] == []
    calls = [s for s in spans if s.kind is SpanKind.INTERNAL]
    http = [s for s in spans if s.kind is SpanKind.CLIENT]
    attempts_made = [s.attributes["kitsd.attempts"] for s in calls if s.attributes]
    assert len(http) == sum(a for a in attempts_made if isinstance(a, int))
    call_ids = {s.context.span_id for s in calls}
    assert all(s.parent is not None and s.parent.span_id in call_ids for s in http)
    retried = [s for s in http if s.attributes and "http.request.resend_count" in s.attributes]
    assert len(retried) == 1
    assert retried[0].attributes is not None
    assert retried[0].attributes["http.request.resend_count"] == 1
    # the instrumentation records the per-request duration; kitsd does not duplicate it
    assert all("kitsd.service" not in p.attributes
               for p in telemetry.points("http.client.request.duration"))


def test_metrics_only(telemetry: Telemetry) -> None:
    other = Telemetry()
    with kitsd.otel.install(meter_provider=other.meter_provider,
                            tracer_provider=other.tracer_provider, spans=False):
        retry_with_ejection("users")
    assert other.finished() == []
    assert other.value("kitsd.retries", **{"kitsd.service": "users"}) == 1
