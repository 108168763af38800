"""The pure SRV translation and refresh policy, without a resolver."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from kitsd.core.errors import MisuseError
from kitsd.sd.dns.srv import RefreshPolicy, SRVInstance, SRVRecord, instances_of, translate
from tests.test_purity import violations

ROOT = Path(__file__).resolve().parents[2]


def test_srv_module_is_pure() -> None:
    assert violations(ROOT / "sd" / "dns" / "srv.py") == []


def test_targets_resolved_to_addresses_keep_priority_and_weight() -> None:
    records = [SRVRecord(10, 60, 8080, "a.example."), SRVRecord(20, 5, 8081, "b.example.")]
    addresses = {"a.example": ["10.0.0.1", "10.0.0.2"], "b.example": ["2001:db8::1"]}
    result = translate(records, addresses)
    assert result == (
        SRVInstance("10.0.0.1:8080", 10, 60, "a.example"),
        SRVInstance("10.0.0.2:8080", 10, 60, "a.example"),
        SRVInstance("[2001:db8::1]:8081", 20, 5, "b.example"),
    )
    assert instances_of(result) == ("10.0.0.1:8080", "10.0.0.2:8080", "[2001:db8::1]:8081")


def test_targets_kept_as_names_without_trailing_dot() -> None:
    result = translate([SRVRecord(1, 1, 80, "Web-0.Users.NS.svc.cluster.local.")], None)
    assert instances_of(result) == ("web-0.users.ns.svc.cluster.local:80",)


def test_same_instance_twice_keeps_the_preferred_priority() -> None:
    records = [SRVRecord(20, 1, 80, "a."), SRVRecord(10, 3, 80, "a.")]
    assert translate(records, None) == (SRVInstance("a:80", 10, 3, "a"),)


def test_dot_target_means_not_available() -> None:
    assert translate([SRVRecord(0, 0, 0, ".")], None) == ()


def test_bad_records_are_skipped_with_a_short_warning(caplog: pytest.LogCaptureFixture) -> None:
    junk = "x" * 5000 + ".example."
    records = [
        SRVRecord(1, 1, 0, "zero-port.example."),
        SRVRecord(1, 1, 80, "no-address.example."),
        SRVRecord(1, 1, 80, junk),
        SRVRecord(1, 1, 81, "good.example."),
    ]
    addresses = {"good.example": ["10.0.0.9"], junk[:-1]: ["not an address!"]}
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.dns.srv"):
        assert instances_of(translate(records, addresses)) == ("10.0.0.9:81",)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert any("zero-port" in m and "outside 1-65535" in m for m in messages)
    assert any("no-address" in m and "no address" in m for m in messages)
    assert all(len(m) < 400 for m in messages), "registry junk must be truncated in warnings"


def test_bad_names_are_skipped_when_kept_as_names() -> None:
    records = [SRVRecord(1, 1, 80, "bad name with spaces."), SRVRecord(1, 1, 80, "ok.")]
    assert instances_of(translate(records, None)) == ("ok:80",)


@pytest.mark.parametrize(
    ("ttl", "expected"), [(0, 1.0), (0.5, 1.0), (30, 30.0), (86400, 300.0)]
)
def test_ttl_is_clamped(ttl: float, expected: float) -> None:
    assert RefreshPolicy(min_ttl=1.0, max_ttl=300.0).after_answer(ttl) == expected


def test_fixed_interval_ignores_the_ttl() -> None:
    policy = RefreshPolicy(interval=7.0)
    assert policy.after_answer(0) == 7.0
    assert policy.after_answer(3600) == 7.0
    assert policy.after_empty() == 7.0
    assert policy.longest == 7.0


def test_empty_answers_refresh_at_the_minimum() -> None:
    assert RefreshPolicy(min_ttl=2.0, max_ttl=10.0).after_empty() == 2.0


def test_retry_backoff_never_exceeds_the_longest_regular_wait() -> None:
    curve = RefreshPolicy(min_ttl=0.1, max_ttl=2.0).retry_curve()
    assert curve.maximum == 2.0
    assert curve.delay(50, 1.0) <= 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"min_ttl": 0}, MisuseError, "min_ttl"),
        ({"min_ttl": -1}, MisuseError, "min_ttl"),
        ({"max_ttl": math.inf}, MisuseError, "max_ttl"),
        ({"max_ttl": math.nan}, MisuseError, "max_ttl"),
        ({"interval": 0.0}, MisuseError, "interval"),
        ({"interval": "5"}, TypeError, "interval"),
        ({"min_ttl": True}, TypeError, "min_ttl"),
        ({"min_ttl": 10.0, "max_ttl": 5.0}, MisuseError, "min_ttl"),
    ],
)
def test_bad_policy_values_fail_naming_the_argument(
    kwargs: dict[str, object], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        RefreshPolicy(**kwargs)  # type: ignore[arg-type]
