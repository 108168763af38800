"""The transport's pure decisions (kitsd.transport._policy, _services, _options)."""

from __future__ import annotations

import httpx
import pytest

from kitsd import lb
from kitsd.core.errors import ConnectionFailure, MisuseError
from kitsd.sd.http._attempt import StatusError
from kitsd.transport import TransportKeywords, TransportOptions, _policy
from kitsd.transport._services import OTHER, Labels, Usage, expired, plan_room


@pytest.mark.parametrize(("extensions", "expected"), [
    ({}, 60.0),
    ({"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}}, 5.0),
    ({"timeout": {"connect": 1.0, "read": 9.0, "write": None, "pool": 2.0}}, 9.0),
    ({"timeout": {"connect": None, "read": None, "write": None, "pool": None}}, 60.0),
    ({"timeout": {"connect": float("inf")}}, 60.0),
])
def test_call_timeout(extensions: dict[str, object], expected: float) -> None:
    assert _policy.call_timeout(extensions, 60.0) == expected


def test_attempt_cap() -> None:
    assert _policy.attempt_cap(1.5, may_retry=True, call_seconds=10) == 1.5
    assert _policy.attempt_cap(None, may_retry=True, call_seconds=10) == 5.0
    assert _policy.attempt_cap(None, may_retry=False, call_seconds=10) is None


@pytest.mark.parametrize("host", ["users", "users-v2", "users_v2", "a.b.c", "10.0.0.7"])
def test_service_names(host: str) -> None:
    assert _policy.service_name(host) == host


@pytest.mark.parametrize("host", ["", "bad name", "-users", "a..b", "x" * 254])
def test_bad_service_names(host: str) -> None:
    with pytest.raises(MisuseError, match="not a valid service name"):
        _policy.service_name(host)


def test_keep_trying() -> None:
    class CircuitBreakerError(Exception):
        pass

    refused = _policy.AttemptUnreachable(ConnectionError("refused"), "i:1", retryable=True)
    sent = _policy.AttemptFailed(OSError("reset"), "i:1", retryable=False)
    status = StatusError(httpx.Response(503), "i:1", "GET", "/", retryable=True)
    assert _policy.keep_trying(1, refused, 3)
    assert _policy.keep_trying(1, status, 3)
    assert not _policy.keep_trying(3, refused, 3)
    assert not _policy.keep_trying(1, sent, 3)
    assert _policy.keep_trying(1, CircuitBreakerError(), 3, (CircuitBreakerError,))
    assert not _policy.keep_trying(1, CircuitBreakerError(), 3)
    assert not _policy.keep_trying(1, ValueError(), 3)


def test_unreachable_is_a_connection_failure_by_class_not_by_registration() -> None:
    assert issubclass(_policy.AttemptUnreachable, ConnectionFailure)
    assert _policy.AttemptUnreachable in ConnectionFailure.__subclasses__()
    assert not isinstance(_policy.AttemptFailed(OSError(), "i:1", retryable=True),
                          ConnectionFailure)


# --- options --------------------------------------------------------------------------


def test_options_are_spelled_once() -> None:
    """The TypedDict that types the keywords and the frozen object hold the same names."""
    assert set(TransportKeywords.__annotations__) == set(TransportOptions.names())


def test_options_normalised_and_frozen() -> None:
    options = TransportOptions(retry_statuses=[503], retry_methods=["get"],
                               services=["users"], timeout=2)
    assert options.retry_statuses == frozenset({503})
    assert options.retry_methods == frozenset({"GET"})
    assert options.timeout == 2.0
    assert isinstance(options.timeout, float)
    assert options.allows("users")
    assert not options.allows("other")
    assert TransportOptions(services=lambda name: name.startswith("u")).allows("users")
    with pytest.raises(AttributeError):
        options.timeout = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"max_attempts": 0}, MisuseError, "max_attempts"),
    ({"max_attempts": True}, TypeError, "max_attempts"),
    ({"retry_statuses": [99]}, MisuseError, "retry_statuses"),
    ({"retry_statuses": "503"}, TypeError, "retry_statuses"),
    ({"retry_methods": "GET"}, TypeError, "retry_methods"),
    ({"timeout": 0}, MisuseError, "timeout"),
    ({"timeout": float("nan")}, MisuseError, "timeout"),
    ({"attempt_timeout": "1"}, TypeError, "attempt_timeout"),
    ({"balancer": 3}, TypeError, "balancer"),
    ({"breakers": 3}, TypeError, "breakers"),
    ({"outlier_detection": 3}, TypeError, "outlier_detection"),
    ({"budget": 3}, TypeError, "budget"),
    ({"hedge": 0.1}, TypeError, "hedge"),
    ({"host_header": 3}, TypeError, "host_header"),
    ({"server_name": 3}, TypeError, "server_name"),
    ({"services": "users"}, TypeError, "services"),
    ({"services": [3]}, TypeError, "services"),
    ({"max_services": 0}, MisuseError, "max_services"),
    ({"idle_timeout": -1}, MisuseError, "idle_timeout"),
])
def test_bad_options_name_the_option(options: dict[str, object], error: type[Exception],
                                     match: str) -> None:
    with pytest.raises(error, match=match):
        TransportOptions(**options)  # type: ignore[arg-type]


def test_typed_options_accept_lb_objects() -> None:
    options = TransportOptions(outlier_detection=lb.OutlierDetection(), budget=lb.RetryBudget(),
                               hedge=lb.Hedge(delay=0.1))
    assert options.hedge == lb.Hedge(delay=0.1)


# --- the bound on services (kitsd.transport._services) ----------------------------------


def usage(name: str, last_used: float, inflight: int = 0,
          empty_since: float | None = None) -> Usage:
    return Usage(name, last_used, inflight, empty_since)


def test_room_when_not_full() -> None:
    assert plan_room([usage("a", 0)], capacity=2, now=1, idle_timeout=300,
                     empty_timeout=10) == ([], True)


def test_full_table_closes_empty_idle_first_then_least_recently_used() -> None:
    table = [usage("old", 1), usage("empty", 5, empty_since=4), usage("new", 9),
             usage("busy", 0, inflight=1)]
    assert plan_room(table, capacity=4, now=10, idle_timeout=300, empty_timeout=10) == (
        ["empty"], True)
    table = [usage("old", 1), usage("new", 9), usage("busy", 0, inflight=1)]
    assert plan_room(table, capacity=3, now=10, idle_timeout=300, empty_timeout=10) == (
        ["old"], True)


def test_full_table_of_busy_services_refuses() -> None:
    table = [usage("a", 0, inflight=1), usage("b", 0, inflight=2)]
    assert plan_room(table, capacity=2, now=10, idle_timeout=300, empty_timeout=10) == (
        [], False)


def test_expired_services_are_closed_even_with_room() -> None:
    table = [usage("idle", 0), usage("empty", 95, empty_since=85), usage("fresh", 99),
             usage("busy-empty", 0, inflight=1, empty_since=0)]
    closed, fits = plan_room(table, capacity=100, now=100, idle_timeout=60, empty_timeout=10)
    assert (sorted(closed), fits) == (["empty", "idle"], True)
    assert not expired(usage("x", 99, empty_since=95), 100, 60, 10)


def test_labels_only_for_admitted_names_and_bounded() -> None:
    labels = Labels(limit=2)
    assert labels.label("random-host", admitted=False) == OTHER
    assert labels.label("users", admitted=True) == "users"
    assert labels.label("users", admitted=False) == "users"  # kept for good
    assert labels.label("orders", admitted=True) == "orders"
    assert labels.label("third", admitted=True) == OTHER
    assert len(labels) == 2
