"""Tests for sd.endpoint: is_async and close_endpoint."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd.core.endpoint import close_endpoint, is_async


async def async_endpoint(request: Any) -> Any:
    return request


def sync_endpoint(request: Any) -> Any:
    return request


class AsyncCallable:
    async def __call__(self, request: Any) -> Any:
        return request

    async def method(self, request: Any) -> Any:
        return request


class SyncCallable:
    def __call__(self, request: Any) -> Any:
        return request


class SyncClose:
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


class AsyncClose:
    """Only ``async def aclose()``; records where it ran."""

    def __init__(self) -> None:
        self.closes = 0
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.threads: list[int] = []

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.loops.append(asyncio.get_running_loop())
        self.threads.append(threading.get_ident())
        self.closes += 1


class AsyncCloseNamedClose:
    """``close()`` that is itself a coroutine function."""

    def __init__(self) -> None:
        self.closes = 0

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closes += 1


class BothCloses:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def close(self) -> None:
        self.calls.append("close")

    async def aclose(self) -> None:
        self.calls.append("aclose")


class RaisingClose:
    def close(self) -> None:
        raise OSError("close failed")


class RaisingAclose:
    async def aclose(self) -> None:
        await asyncio.sleep(0)
        raise OSError("aclose failed")


# --- is_async ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [async_endpoint, AsyncCallable(), AsyncCallable().method, functools.partial(async_endpoint)],
    ids=["coroutine function", "async __call__", "async method", "partial"],
)
def test_is_async_true(endpoint: object) -> None:
    assert is_async(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    [sync_endpoint, SyncCallable(), lambda request: request, AsyncCallable, print],
    ids=["function", "sync __call__", "lambda", "class with async __call__", "builtin"],
)
def test_is_async_false(endpoint: object) -> None:
    assert not is_async(endpoint)


# --- close_endpoint ----------------------------------------------------------------------


def test_sync_close_runs_here_once() -> None:
    endpoint = SyncClose()
    assert close_endpoint(endpoint) is None
    assert endpoint.closes == 1


def test_nothing_to_close_is_fine() -> None:
    assert close_endpoint(sync_endpoint) is None
    assert close_endpoint(async_endpoint) is None
    assert close_endpoint(object()) is None


def test_close_is_preferred_over_aclose() -> None:
    endpoint = BothCloses()
    assert close_endpoint(endpoint) is None
    assert endpoint.calls == ["close"]


def test_aclose_without_a_loop_runs_to_completion() -> None:
    endpoint = AsyncClose()
    assert close_endpoint(endpoint) is None
    assert endpoint.closes == 1
    assert endpoint.threads == [threading.get_ident()]


def test_async_close_named_close_without_a_loop_runs_to_completion() -> None:
    endpoint = AsyncCloseNamedClose()
    assert close_endpoint(endpoint) is None
    assert endpoint.closes == 1


async def test_aclose_in_a_running_loop_returns_a_task() -> None:
    endpoint = AsyncClose()
    pending = close_endpoint(endpoint)
    assert isinstance(pending, asyncio.Task)
    assert endpoint.closes == 0  # scheduled, not run inline
    await pending
    assert endpoint.closes == 1
    assert endpoint.loops == [asyncio.get_running_loop()]


async def test_async_close_named_close_in_a_running_loop_returns_a_task() -> None:
    endpoint = AsyncCloseNamedClose()
    pending = close_endpoint(endpoint)
    assert isinstance(pending, asyncio.Task)
    await pending
    assert endpoint.closes == 1


async def test_sync_close_in_a_running_loop_runs_inline() -> None:
    endpoint = SyncClose()
    assert close_endpoint(endpoint) is None
    assert endpoint.closes == 1


def test_a_close_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="kitsd.core.endpoint"):
        assert close_endpoint(RaisingClose()) is None
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
    assert "close failed" in caplog.text


def test_an_aclose_that_raises_without_a_loop_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="kitsd.core.endpoint"):
        assert close_endpoint(RaisingAclose()) is None
    assert len(caplog.records) == 1
    assert "aclose failed" in caplog.text


async def test_an_aclose_that_raises_in_a_loop_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="kitsd.core.endpoint"):
        pending = close_endpoint(RaisingAclose())
        assert isinstance(pending, asyncio.Task)
        await pending  # the task itself does not fail
    assert pending.exception() is None
    assert len(caplog.records) == 1
    assert "aclose failed" in caplog.text


def test_an_aclose_that_raises_before_its_coroutine_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadAclose:
        def aclose(self) -> Any:
            raise OSError("no coroutine for you")

    with caplog.at_level(logging.ERROR, logger="kitsd.core.endpoint"):
        assert close_endpoint(BadAclose()) is None
    assert "no coroutine for you" in caplog.text


@pytest.fixture
def loop_in_thread(no_thread_leaks: None) -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop")
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_aclose_goes_to_a_loop_running_in_another_thread(
    loop_in_thread: asyncio.AbstractEventLoop,
) -> None:
    endpoint = AsyncClose()
    pending = close_endpoint(endpoint, loop_in_thread)
    assert isinstance(pending, concurrent.futures.Future)
    assert pending.result(timeout=5) is None
    assert endpoint.closes == 1
    assert endpoint.loops == [loop_in_thread]
    assert endpoint.threads != [threading.get_ident()]


def test_a_loop_that_is_not_running_is_not_used() -> None:
    stale = asyncio.new_event_loop()
    try:
        endpoint = AsyncClose()
        assert close_endpoint(endpoint, stale) is None  # ran here on a fresh loop instead
        assert endpoint.closes == 1
        assert endpoint.loops[0] is not stale
    finally:
        stale.close()


def test_a_closed_loop_is_not_used() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    endpoint = AsyncClose()
    assert close_endpoint(endpoint, closed) is None
    assert endpoint.closes == 1


async def test_the_running_loop_wins_over_the_given_loop(
    loop_in_thread: asyncio.AbstractEventLoop,
) -> None:
    endpoint = AsyncClose()
    pending = close_endpoint(endpoint, loop_in_thread)
    assert isinstance(pending, asyncio.Task)
    await pending
    assert endpoint.loops == [asyncio.get_running_loop()]
