"""The single-flight drivers (kitsd/auth/_source.py): one fetch however many callers,
sync (threads) and asyncio (tasks)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from kitsd.auth import TokenError
from kitsd.auth._source import AsyncSingleFlight, SingleFlight
from kitsd.auth._token import Token


class Fetcher:
    """Counts fetches; each takes ``delay`` and returns ``t<n>`` living ``lifetime``."""

    def __init__(self, delay: float = 0.1, lifetime: float = 60.0,
                 refresh_after: float | None = None) -> None:
        self.delay = delay
        self.lifetime = lifetime
        self.refresh_after = lifetime * 0.9 if refresh_after is None else refresh_after
        self.count = 0
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def _token(self) -> Token:
        with self.lock:
            self.count += 1
            number = self.count
        if self.fail is not None:
            raise self.fail
        now = time.monotonic()
        return Token(f"t{number}", now + self.lifetime, now + self.refresh_after)

    def __call__(self) -> Token:
        time.sleep(self.delay)
        return self._token()

    async def fetch(self) -> Token:
        await asyncio.sleep(self.delay)
        return self._token()


def _threads(flight: SingleFlight, count: int) -> list[str | BaseException]:
    results: list[str | BaseException] = []
    barrier = threading.Barrier(count)

    def call() -> None:
        barrier.wait()
        try:
            results.append(flight.token())
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_200_threads_cold_start_one_fetch() -> None:
    fetcher = Fetcher()
    flight = SingleFlight(fetcher, name="test", wait=5.0)
    assert _threads(flight, 200) == ["t1"] * 200
    assert fetcher.count == 1


async def test_200_tasks_cold_start_one_fetch() -> None:
    fetcher = Fetcher()
    flight = AsyncSingleFlight(fetcher.fetch, name="test", wait=5.0)
    assert await asyncio.gather(*(flight.token() for _ in range(200))) == ["t1"] * 200
    assert fetcher.count == 1


def test_200_threads_at_refresh_time_one_fetch_nobody_waits() -> None:
    fetcher = Fetcher(delay=0.3, refresh_after=0.0)  # due for refresh at once, valid 60 s
    flight = SingleFlight(fetcher, name="test", wait=5.0)
    assert flight.token() == "t1"
    fetcher.refresh_after = 60.0
    started = time.monotonic()
    results = _threads(flight, 200)
    assert fetcher.count == 2
    assert set(results) <= {"t1", "t2"}
    assert results.count("t2") >= 1  # the refresher
    assert results.count("t1") >= 1  # the others went on with the current token
    assert time.monotonic() - started < 2.0


def test_a_failed_fetch_fails_its_waiters_once() -> None:
    fetcher = Fetcher()
    fetcher.fail = RuntimeError("the endpoint is down: secret=hunter2")
    flight = SingleFlight(fetcher, name="test", wait=5.0)
    results = _threads(flight, 50)
    assert all(isinstance(result, TokenError) for result in results)
    assert fetcher.count <= 2  # one wave: the fetcher and, at most, one latecomer
    for result in results:
        assert "hunter2" not in str(result)
        assert "RuntimeError" in str(result)
    fetcher.fail = None
    assert flight.token().startswith("t")


async def test_async_failed_fetch_fails_its_waiters() -> None:
    fetcher = Fetcher()
    fetcher.fail = TokenError("test", "refused")
    flight = AsyncSingleFlight(fetcher.fetch, name="test", wait=5.0)
    results = await asyncio.gather(*(flight.token() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(result, TokenError) for result in results)
    assert fetcher.count == 1


def test_refresh_failure_keeps_the_valid_token(caplog: pytest.LogCaptureFixture) -> None:
    fetcher = Fetcher(delay=0.0, refresh_after=0.0)
    flight = SingleFlight(fetcher, name="test", wait=5.0)
    flight.token()
    fetcher.fail = OSError("down")
    with caplog.at_level(logging.WARNING, logger="kitsd.auth"):
        assert flight.token() == "t1"
    assert "the current token stays in use" in caplog.text


async def test_cancelled_fetch_hands_over_to_a_waiter() -> None:
    fetcher = Fetcher(delay=0.2)
    flight = AsyncSingleFlight(fetcher.fetch, name="test", wait=5.0)
    first = asyncio.create_task(flight.token())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(flight.token())
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second == "t1"  # the cancelled fetch never finished; the waiter fetched
    assert fetcher.count == 1
    with pytest.raises(asyncio.CancelledError):
        await first


def test_invalidate_then_one_fetch() -> None:
    fetcher = Fetcher(delay=0.05)
    flight = SingleFlight(fetcher, name="test", wait=5.0)
    old = flight.token()
    for _ in range(200):
        flight.invalidate(old)
    assert _threads(flight, 100) == ["t2"] * 100
    assert fetcher.count == 2


def test_waiting_is_bounded() -> None:
    fetcher = Fetcher(delay=1.0)
    flight = SingleFlight(fetcher, name="test", wait=0.2)
    results = _threads(flight, 5)
    assert sum(isinstance(result, TokenError) for result in results) == 4
    assert any("timed out waiting" in str(result) for result in results)
