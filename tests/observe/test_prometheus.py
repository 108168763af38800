"""kitsd.prometheus: exact metric values read back from a real CollectorRegistry
after scripted scenarios."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import kitsd.prometheus
from kitsd.core import observe
from kitsd.core.observe import BudgetRefused, RateLimited
from tests.observe.scenarios import (
    DOWN,
    UP,
    breaker_opening,
    discovery_with_errors,
    retry_with_ejection,
)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    with kitsd.prometheus.install(registry):
        yield registry
    assert observe.HUB.observers == ()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_retry_and_an_ejection(registry: CollectorRegistry) -> None:
    balancer = retry_with_ejection("users")
    assert value(registry, "kitsd_calls_total", service="users", outcome="success") == 2
    assert value(registry, "kitsd_call_duration_seconds_count",
                 service="users", outcome="success") == 2
    assert value(registry, "kitsd_attempts_total",
                 service="users", instance=DOWN, outcome="error") == 1
    assert value(registry, "kitsd_attempts_total",
                 service="users", instance=UP, outcome="success") == 2
    assert value(registry, "kitsd_retries_total", service="users") == 1
    assert value(registry, "kitsd_ejections_total", service="users", instance=DOWN) == 1
    assert value(registry, "kitsd_ejections_total", service="users", instance=UP) is None
    assert balancer.ejected() == [DOWN]
    assert value(registry, "kitsd_instances", service="users", state="ejected") == 1


def test_a_breaker_opening(registry: CollectorRegistry) -> None:
    cb = breaker_opening("payments")
    assert value(registry, "kitsd_breaker_state", breaker="payments", state="open") == 1
    assert value(registry, "kitsd_breaker_state", breaker="payments", state="closed") == 0
    assert value(registry, "kitsd_breaker_state", breaker="payments", state="half-open") == 0
    cb.close()  # steered by hand: the gauge reads the breaker itself
    assert value(registry, "kitsd_breaker_state", breaker="payments", state="closed") == 1
    del cb
    gc.collect()
    assert value(registry, "kitsd_breaker_state", breaker="payments", state="closed") is None


def test_a_discovery_error(registry: CollectorRegistry) -> None:
    discovery_with_errors("orders")
    assert value(registry, "kitsd_discovery_errors_total", kind="memory", service="orders") == 2
    assert value(registry, "kitsd_instances", service="orders", state="discovered") == 2
    assert value(registry, "kitsd_instances", service="orders", state="ejected") == 0


def test_budget_refusals_and_rate_limits(registry: CollectorRegistry) -> None:
    observe.emit(BudgetRefused("users"))
    observe.emit(RateLimited("api", rejected=True, waited=0.0))
    observe.emit(RateLimited("api", rejected=False, waited=0.2))
    observe.emit(RateLimited("api", rejected=False, waited=0.1))
    assert value(registry, "kitsd_budget_refusals_total", service="users") == 1
    assert value(registry, "kitsd_rate_limited_total", limiter="api", outcome="rejected") == 1
    assert value(registry, "kitsd_rate_limited_total", limiter="api", outcome="waited") == 2


def test_the_exposition_parses_and_follows_the_naming_rules(registry: CollectorRegistry) -> None:
    retry_with_ejection("users")
    breaker_opening("payments")
    discovery_with_errors("orders")
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"kitsd_calls", "kitsd_call_duration_seconds", "kitsd_attempts", "kitsd_retries",
            "kitsd_budget_refusals", "kitsd_ejections", "kitsd_instances",
            "kitsd_breaker_state", "kitsd_discovery_errors",
            "kitsd_rate_limited"} <= set(families)
    assert families["kitsd_calls"].type == "counter"
    assert families["kitsd_call_duration_seconds"].type == "histogram"
    assert families["kitsd_instances"].type == "gauge"
    allowed = {"service", "outcome", "instance", "state", "breaker", "kind", "limiter", "le"}
    for family in families.values():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample


def test_close_unregisters_and_a_second_observer_fits() -> None:
    registry = CollectorRegistry()
    first = kitsd.prometheus.install(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        kitsd.prometheus.PrometheusObserver(registry)
    first.close()
    assert observe.HUB.observers == ()
    assert list(registry.collect()) == []
    with kitsd.prometheus.install(registry):
        retry_with_ejection("users")
        assert value(registry, "kitsd_calls_total", service="users", outcome="success") == 2


def test_nothing_is_counted_when_not_installed() -> None:
    registry = CollectorRegistry()
    metrics = kitsd.prometheus.PrometheusObserver(registry)
    retry_with_ejection("users")
    assert value(registry, "kitsd_calls_total", service="users", outcome="success") is None
    metrics.close()


def test_registry_must_be_a_registry() -> None:
    with pytest.raises(TypeError, match="registry"):
        kitsd.prometheus.PrometheusObserver("registry")  # type: ignore[arg-type]
