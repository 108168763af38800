"""retry_transient: a registry's brief unavailability is ridden out, other errors are not."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.transient import retry_transient


def _flaky(failures: int) -> tuple[list[float], Callable[[], str]]:
    calls: list[float] = []

    def operation() -> str:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise RegistryUnavailableError(f"down {len(calls)}")
        return "done"

    return calls, operation


def test_unavailable_is_retried_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    calls, operation = _flaky(2)
    assert retry_transient(operation, within=5.0, what="registering x") == "done"
    assert len(calls) == 3
    assert caplog.text.count("registering x: down") == 2


def test_gives_up_after_the_window_with_the_last_error() -> None:
    calls, operation = _flaky(10_000)
    began = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="down"):
        retry_transient(operation, within=0.3, what="x")
    assert 0.3 <= time.monotonic() - began < 2.5
    assert len(calls) >= 2


def test_zero_window_tries_once() -> None:
    calls, operation = _flaky(1)
    with pytest.raises(RegistryUnavailableError):
        retry_transient(operation, within=0, what="x")
    assert len(calls) == 1


def test_permission_denied_is_not_retried() -> None:
    calls: list[int] = []

    def operation() -> None:
        calls.append(1)
        raise PermissionDeniedError("no")

    with pytest.raises(PermissionDeniedError):
        retry_transient(operation, within=5.0, what="x")
    assert calls == [1]
