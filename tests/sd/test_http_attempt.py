"""The HTTP attempt rules (sd.http._attempt), shared by sd.http and kitsd.Transport."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from kitsd.sd import http as sd_http
from kitsd.sd.http import _attempt
from kitsd.transport import _policy


def test_one_status_error_for_both_paths() -> None:
    assert sd_http.StatusError is _attempt.StatusError
    error = _attempt.StatusError(httpx.Response(503), "10.0.0.1:80", "GET", "/x",
                                 retryable=True, retry_after=2.0)
    assert (error.status_code, error.retryable, error.retry_after) == (503, True, 2.0)
    assert str(error) == "HTTP 503 from 10.0.0.1:80 (GET /x)"


def test_cap_timeouts_by_time_left_and_cap() -> None:
    original = {"connect": 5.0, "read": None, "write": 1.0, "pool": 5.0}
    assert _attempt.cap_timeouts(original, 3.0, 2.0) == {
        "connect": 2.0, "read": 2.0, "write": 1.0, "pool": 2.0}
    assert _attempt.cap_timeouts(original, None, None) == original
    assert _attempt.cap_timeouts(None, 0.0) == dict.fromkeys(_attempt.PHASES, 1e-3)


def test_sd_http_and_transport_cap_alike() -> None:
    """sd.http's Spec.bound and the transport's attempt both go through cap_timeouts."""
    spec = sd_http._spec.Spec.build("GET", "/", lambda r: {}, lambda r: r, None, "http")
    kwargs: dict[str, object] = {"timeout": httpx.Timeout(5.0, read=None)}
    spec.bound(kwargs, httpx.Timeout(1.0), 2.0)
    assert kwargs["timeout"] == httpx.Timeout(**_attempt.cap_timeouts(
        httpx.Timeout(5.0, read=None).as_dict(), 2.0))


@pytest.mark.parametrize(("error", "expected"), [
    (httpx.ConnectError("refused"), (True, True, False)),
    (httpx.ConnectTimeout("slow"), (True, True, False)),
    (httpx.PoolTimeout("full"), (True, False, False)),
    (httpx.ReadTimeout("slow"), (False, True, True)),
    (httpx.WriteTimeout("slow"), (False, True, True)),
    (httpx.RemoteProtocolError("bad"), (False, False, False)),
    (httpx.ReadError("reset"), (False, False, False)),
])
def test_transport_failures(error: httpx.TransportError, expected: tuple[bool, ...]) -> None:
    assert tuple(_attempt.transport_failure(error)) == expected


def test_retry_after() -> None:
    assert _attempt.parse_retry_after("3", now=0) == 3.0
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert _attempt.parse_retry_after(when, now=1_000_000) == pytest.approx(10.0)
    assert _attempt.parse_retry_after("soon", now=0) is None
    assert _attempt.parse_retry_after(None, now=0) is None


@pytest.mark.parametrize("value", [
    "²", "³", "١٢", "٣", "1²", "①", "-1", "1.5", "inf", "nan", "1e3", " ", "0x10",
    "Mon, 01 Jan 99999 00:00:00 GMT", "Mon, 32 Foo 2020 99:99:99 GMT",
])
def test_retry_after_values_float_half_accepts_are_ignored(value: str) -> None:
    """Issue 16.9: str.isdigit() says yes to '²' and float() then raised ValueError."""
    assert _attempt.parse_retry_after(value, now=0) is None


def test_retry_after_date_without_zone_is_gmt() -> None:
    assert _attempt.parse_retry_after("Thu, 01 Jan 1970 00:00:10 -0000", now=0) == 10.0


@pytest.mark.parametrize(("status", "accepted", "may_retry", "expected"), [
    (200, True, True, (False, False, None)),
    (503, False, True, (True, True, 2.0)),
    (503, False, False, (True, False, None)),
    (500, False, True, (True, False, None)),
    (502, False, True, (True, True, None)),
    (429, False, True, (True, False, None)),  # not a retry status here
])
def test_judge_status(status: int, accepted: bool, may_retry: bool,
                      expected: tuple[bool, bool, float | None]) -> None:
    verdict = _attempt.judge_status(status, accepted, retry_statuses=_policy.RETRY_STATUSES,
                                    may_retry=may_retry, retry_after="2", now=0)
    assert tuple(verdict) == expected


def test_deadline_caused() -> None:
    assert _attempt.deadline_caused(5.0, left_at_start=2.0, left_now=0.0)
    assert _attempt.deadline_caused(5.0, left_at_start=2.0, left_now=1.0)  # cut short
    assert _attempt.deadline_caused(None, left_at_start=2.0, left_now=1.0)
    assert not _attempt.deadline_caused(1.0, left_at_start=2.0, left_now=1.0)
