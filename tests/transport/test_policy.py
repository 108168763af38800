"""The transport's pure decisions (kitsd.transport._policy)."""

from __future__ import annotations

import email.utils

import pytest

from kitsd.core.errors import MisuseError
from kitsd.transport import _policy

SETTINGS = _policy.check_settings(max_attempts=3, retry_statuses={502, 503, 504},
                                  retry_methods=_policy.IDEMPOTENT_METHODS, timeout=60,
                                  attempt_timeout=None)


@pytest.mark.parametrize(("extensions", "expected"), [
    ({}, 60.0),
    ({"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}}, 5.0),
    ({"timeout": {"connect": 1.0, "read": 9.0, "write": None, "pool": 2.0}}, 9.0),
    ({"timeout": {"connect": None, "read": None, "write": None, "pool": None}}, 60.0),
    ({"timeout": {"connect": float("inf")}}, 60.0),
])
def test_call_timeout(extensions: dict[str, object], expected: float) -> None:
    assert _policy.call_timeout(extensions, 60.0) == expected


def test_attempt_timeouts_capped_by_remaining_and_cap() -> None:
    original = {"connect": 5.0, "read": None, "write": 1.0, "pool": 5.0}
    assert _policy.attempt_timeouts(original, 3.0, 2.0) == {
        "connect": 2.0, "read": 2.0, "write": 1.0, "pool": 2.0}
    assert _policy.attempt_timeouts(original, None, None) == original


def test_retry_after() -> None:
    assert _policy.parse_retry_after("3", now=0) == 3.0
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert _policy.parse_retry_after(when, now=1_000_000) == pytest.approx(10.0)
    assert _policy.parse_retry_after("soon", now=0) is None
    assert _policy.parse_retry_after(None, now=0) is None


@pytest.mark.parametrize(("status", "may_retry", "expected"), [
    (200, True, (False, False, None)),
    (503, True, (True, True, 2.0)),
    (503, False, (True, False, None)),
    (500, True, (True, False, None)),
    (502, True, (True, True, None)),
])
def test_classify_status(status: int, may_retry: bool,
                         expected: tuple[bool, bool, float | None]) -> None:
    assert _policy.classify_status(status, "2", "i:1", may_retry=may_retry, settings=SETTINGS,
                                   now=0) == expected


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
    assert _policy.keep_trying(1, refused, 3)
    assert not _policy.keep_trying(3, refused, 3)
    assert not _policy.keep_trying(1, sent, 3)
    assert _policy.keep_trying(1, CircuitBreakerError(), 3, (CircuitBreakerError,))
    assert not _policy.keep_trying(1, CircuitBreakerError(), 3)
    assert not _policy.keep_trying(1, ValueError(), 3)
