"""Building discovery from asyncio code against a registry that accepts connections and
never answers (a black hole): the event loop keeps running.

``sd.instancer_from_url`` waits up to ``first_answer_timeout`` (5 s) in its constructor:
called from a coroutine it stalls the loop that long.  ``sd.instancer_from_url_async``
builds on a worker thread and waits on the loop; ``kitsd.AsyncTransport`` builds a
service's watch on a worker thread.  A ticker task ticking every 10 ms measures the
longest stall while each runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from kitsd.core.errors import RegistryUnavailableError
from tests.helpers import wait_for

SCHEMES = ["etcd", "consul", "zk", "dnssrv"]
STALL = 0.5  # the longest pause of the loop we accept (a blocked loop pauses >= 1 s)


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            self._accepted.append(connection)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        for sock in [self._listener, *self._accepted]:
            sock.close()


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    made = BlackHole()
    yield made
    made.close()


def url(scheme: str, port: int, service: str = "users") -> str:
    return {
        "etcd": f"etcd://127.0.0.1:{port}/services/{service}/",
        "consul": f"consul://127.0.0.1:{port}/{service}",
        "zk": f"zk://127.0.0.1:{port}/services/{service}",
        "dnssrv": f"dnssrv://_{service}._tcp.example.com?server=127.0.0.1:{port}",
    }[scheme]


class Ticker:
    """A task that wakes every 10 ms and remembers the longest gap between two wakes."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0
        self._running = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def start(cls) -> Ticker:
        """A ticker that is ticking."""
        ticker = cls()
        await ticker._running.wait()
        return ticker

    async def _run(self) -> None:
        last = time.monotonic()
        self._running.set()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            self.ticks += 1
            last = now

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def no_threads_but_the_executors_since(before: set[threading.Thread]) -> None:
    """Within 10 s, no thread started since ``before`` is left but the loop's executor
    workers (idle: the loop keeps them until it closes)."""
    def leftover() -> list[str]:
        return [thread.name for thread in threading.enumerate()
                if thread not in before and not thread.name.startswith("asyncio_")]

    wait_for(lambda: not leftover(), timeout=10, what="the threads to end")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_instancer_from_url_async_keeps_the_loop_running(
    hole: BlackHole, scheme: str
) -> None:
    ticker = await Ticker.start()
    started = time.monotonic()
    instancer = await sd.instancer_from_url_async(url(scheme, hole.port),
                                                  first_answer_timeout=1.0)
    took = time.monotonic() - started
    await ticker.stop()
    try:
        assert instancer.answered
        error = instancer.state.error
        assert isinstance(error, RegistryUnavailableError)
        assert took < 1.0 + STALL + 1.0  # the first-answer bound, not a vendor timeout
        assert ticker.longest < STALL, f"the loop stalled {ticker.longest:.2f}s"
        assert ticker.ticks >= 10
    finally:
        await asyncio.to_thread(instancer.stop)


@pytest.mark.parametrize("scheme", ["zk", "dnssrv"])
async def test_the_blocking_constructor_stalls_the_loop_that_long(
    hole: BlackHole, scheme: str
) -> None:
    """What the async twin is for: the plain constructor waits on the caller's thread."""
    ticker = await Ticker.start()
    instancer = sd.instancer_from_url(url(scheme, hole.port), first_answer_timeout=1.0)
    await asyncio.sleep(0.05)  # let the ticker see the stall
    await ticker.stop()
    await asyncio.to_thread(instancer.stop)
    assert ticker.longest >= 0.9


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_async_transport_first_request_keeps_the_loop_running(
    hole: BlackHole, scheme: str
) -> None:
    """kitsd.AsyncTransport builds a service's watch on a worker thread."""
    client = httpx.AsyncClient(transport=kitsd.AsyncTransport(url(scheme, hole.port,
                                                                  "{service}")))
    try:
        ticker = await Ticker.start()
        started = time.monotonic()
        with pytest.raises((lb.NoEndpointsError, httpx.TimeoutException)):
            await client.get("http://users/", timeout=1.0)
        took = time.monotonic() - started
        await ticker.stop()
        assert ticker.longest < STALL, f"the loop stalled {ticker.longest:.2f}s"
        # bounded by the request's timeout, not by the instancer's first-answer wait
        # (dnssrv:// took 5 s: the URL instancer waited in its constructor)
        assert took < 1.0 + 1.5
    finally:
        await client.aclose()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_url_instancer_that_does_not_wait_returns_unanswered(
    hole: BlackHole, scheme: str
) -> None:
    """instancer_from_url(first_answer_timeout=0): what the transport builds (it waits
    for the first answer itself, bounded by the request's time)."""
    started = time.monotonic()
    with sd.instancer_from_url(url(scheme, hole.port), first_answer_timeout=0) as instancer:
        assert time.monotonic() - started < 0.9
        seen: list[sd.Event] = []
        instancer.subscribe(seen.append)
        assert seen == [] or seen[0].error is not None  # never a state nobody read


@pytest.mark.parametrize("when", [0.0, 0.3])
async def test_cancelled_while_building_or_waiting_leaves_nothing_running(
    hole: BlackHole, when: float
) -> None:
    before = set(threading.enumerate())
    task = asyncio.create_task(sd.instancer_from_url_async(url("zk", hole.port)))
    await asyncio.sleep(when)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(no_threads_but_the_executors_since, before)


async def test_a_bad_url_or_timeout_raises_as_the_sync_one() -> None:
    with pytest.raises(sd.MisuseError, match="unknown instancer URL scheme"):
        await sd.instancer_from_url_async("nope://x/")
    with pytest.raises(sd.MisuseError, match="first_answer_timeout"):
        await sd.instancer_from_url_async("static://a:1", first_answer_timeout=-1)
    instancer = await sd.instancer_from_url_async("static://a:1,b:2")
    assert instancer.state == sd.Event(("a:1", "b:2"))


def _cold(*, kind: str = "custom") -> tuple[sd.instancer.InstancerHandle,
                                            Callable[[sd.Event], bool]]:
    broadcaster = sd.instancer.Broadcaster(kind=kind, pending=True)
    return sd.instancer.InstancerHandle(broadcaster), broadcaster.publish


async def test_wait_first_answer_async_returns_when_a_thread_publishes() -> None:
    handle, publish = _cold()
    ticker = await Ticker.start()
    threading.Timer(0.2, publish, args=(sd.Event(("a:1",)),)).start()
    assert await handle.wait_first_answer_async(10)
    await ticker.stop()
    assert handle.state == sd.Event(("a:1",))
    assert ticker.ticks >= 5  # the loop ran meanwhile


async def test_wait_first_answer_async_publishes_the_late_error() -> None:
    handle, publish = _cold()
    seen: list[sd.Event] = []
    handle.subscribe(seen.append)
    assert not await handle.wait_first_answer_async(0.1)
    assert len(seen) == 1
    assert isinstance(seen[0].error, RegistryUnavailableError)
    assert "within 0.1s (still trying)" in str(seen[0].error)
    publish(sd.Event(("a:1",)))  # the real answer replaces it
    assert seen[-1] == sd.Event(("a:1",))
    assert await handle.wait_first_answer_async(0.1)  # answered: at once


def test_cancelled_as_the_loop_ends_leaves_nothing_running(hole: BlackHole) -> None:
    """asyncio.run() cancels a build still in flight and shuts its executor down: what
    the build returns is stopped all the same."""
    before = set(threading.enumerate())

    async def main() -> None:
        asyncio.get_running_loop().create_task(
            sd.instancer_from_url_async(url("zk", hole.port)))
        await asyncio.sleep(0)  # the build has started; run() now cancels it

    asyncio.run(main())
    wait_for(lambda: not [thread for thread in threading.enumerate() if thread not in before],
             timeout=10, what="the threads to end")
