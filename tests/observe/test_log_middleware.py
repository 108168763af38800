"""kitsd.log_middleware: one structured line per call, with no secret in it."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

import kitsd.log_middleware
import kitsd.sd.http
from kitsd import lb, sd
from kitsd.core import observe
from tests.observe.scenarios import DOWN, UP, retry_with_ejection

SECRET = "s3cr3t-t0ken"  # noqa: S105 - a fake, to look for in the logs


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kitsd.log_middleware"]


def test_one_line_per_call_with_extra_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), \
            observe.observing(kitsd.log_middleware.CallLogger(level=logging.DEBUG)):
        retry_with_ejection("users")
    first, second = records(caplog)
    assert first.levelno == logging.DEBUG
    fields = {k: getattr(first, k) for k in (
        "kitsd_service", "kitsd_instance", "kitsd_outcome", "kitsd_attempts", "kitsd_error_type")}
    assert fields == {"kitsd_service": "users", "kitsd_instance": UP,
                      "kitsd_outcome": "success", "kitsd_attempts": 2, "kitsd_error_type": ""}
    assert vars(second)["kitsd_attempts"] == 1
    assert vars(first)["kitsd_duration"] > 0
    assert "users success after 2 attempt(s)" in first.getMessage()


def test_failures_log_at_the_failure_level_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"bad token {SECRET}")

    factory: Any = sd.http.factory(
        "GET", "/", encode=lambda token: {"headers": {"Authorization": f"Bearer {token}"},
                                          "params": {"token": token}},
        decode=lambda response: response.json(),
        client_kwargs={"transport": httpx.MockTransport(handler)})
    logger = kitsd.log_middleware.CallLogger(failure_level=logging.ERROR)
    with caplog.at_level(logging.DEBUG), observe.observing(logger), \
            sd.Endpointer(sd.FixedInstancer([DOWN]), factory) as endpointer:
        call = lb.retry(2, 5.0, lb.RoundRobin(endpointer), name="auth")
        with pytest.raises(lb.RetryError):
            call(SECRET)
    (line,) = records(caplog)
    assert line.levelno == logging.ERROR
    assert vars(line)["kitsd_outcome"] == "error"
    assert vars(line)["kitsd_error_type"] == "StatusError"
    everything = line.getMessage() + repr(vars(line))
    assert SECRET not in everything


def test_a_disabled_level_costs_no_formatting(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), \
            observe.observing(kitsd.log_middleware.CallLogger(level=logging.DEBUG)):
        retry_with_ejection("users")
    assert records(caplog) == []


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="logger"):
        kitsd.log_middleware.CallLogger("kitsd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="level"):
        kitsd.log_middleware.CallLogger(level="DEBUG")  # type: ignore[arg-type]
