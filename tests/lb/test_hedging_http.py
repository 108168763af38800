"""Hedging through the transport against real local HTTP instances (issue 16.1): a
hedge's losing answer is closed as soon as the race is decided, so its connection
goes back to the pool, and closing a hedged transport does not wait out an attempt
that hangs.

Each test counts what the inner transport's connection pool holds: a connection
whose response nobody will ever close stays active for good.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from kitsd.transport import _httpcore_cancel
from tests.helpers import async_wait_for, wait_for
from tests.transport.servers import Instance

POOL = httpx.Limits(max_connections=10, max_keepalive_connections=10)
#: Hedge every call at once: both attempts run, one of them always loses.
AT_ONCE = lb.Hedge(delay=0.0)


@pytest.fixture
def two() -> Iterator[tuple[sd.MemoryRegistry, list[Instance]]]:
    registry = sd.MemoryRegistry()
    instances = [Instance(), Instance()]
    for instance in instances:
        registry.registrar("users", instance.address).register()
    yield registry, instances
    for instance in instances:
        instance.kill()


def held(pool: Any) -> int:
    """Connections of an httpx transport's pool that are not idle (a response on
    them is still open), httpcore's public ``connections`` view."""
    return sum(1 for connection in pool.connections if not connection.is_idle())


def _hedging_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "kitsd.lb.hedging" and record.levelno >= logging.WARNING]


@pytest.mark.parametrize("buffer_body", [65536, 0], ids=["buffered", "streamed"])
def test_sync_losers_are_closed(two: tuple[sd.MemoryRegistry, list[Instance]],
                                buffer_body: int, caplog: pytest.LogCaptureFixture) -> None:
    registry, instances = two
    inner = httpx.HTTPTransport(limits=POOL)
    transport = kitsd.Transport(registry, hedge=AT_ONCE, transport=inner,
                                buffer_body=buffer_body)
    with httpx.Client(transport=transport, base_url="http://users",
                      timeout=httpx.Timeout(5.0, pool=1.0)) as client:
        for _ in range(60):  # six times the pool: without the close, PoolTimeout
            assert client.get("/").status_code == 200
        assert sum(instance.total() for instance in instances) > 60  # hedges were sent
        # a loser may still be on its way; once it lands, it is closed at once
        wait_for(lambda: held(inner._pool) == 0, timeout=5.0)
    # a buffered loser is closed, not handed back as a coroutine nobody awaits
    assert _hedging_errors(caplog) == []


@pytest.mark.parametrize("buffer_body", [65536, 0], ids=["buffered", "streamed"])
def test_async_losers_are_closed(two: tuple[sd.MemoryRegistry, list[Instance]],
                                 buffer_body: int, caplog: pytest.LogCaptureFixture) -> None:
    registry, instances = two

    async def main() -> None:
        inner = httpx.AsyncHTTPTransport(limits=POOL)
        transport = kitsd.AsyncTransport(registry, hedge=AT_ONCE, transport=inner,
                                         buffer_body=buffer_body)
        async with httpx.AsyncClient(transport=transport, base_url="http://users",
                                     timeout=httpx.Timeout(5.0, pool=1.0)) as client:
            for _ in range(30):
                answers = await asyncio.gather(*(client.get("/") for _ in range(5)))
                assert [answer.status_code for answer in answers] == [200] * 5
            assert sum(instance.total() for instance in instances) > 150
            # every call has returned; a loser not yet on the wire when its call ended
            # finishes on its own (kitsd/transport/_httpcore_cancel.py) and is closed
            await async_wait_for(lambda: held(inner._pool) == 0, timeout=10.0,
                                 what="every connection back in the pool")
            later = await asyncio.gather(*(client.get("/") for _ in range(20)))
            assert [answer.status_code for answer in later] == [200] * 20

    asyncio.run(main())
    assert _hedging_errors(caplog) == []


def test_closing_does_not_wait_for_a_hung_attempt(
    two: tuple[sd.MemoryRegistry, list[Instance]], no_thread_leaks: None,
) -> None:
    """Closed while both attempts of a call hang: close() returns at once, the call
    in flight ends at once with an error, and the attempts' threads end when the
    instances let go (each is bounded by its deadline in any case)."""
    registry, instances = two
    for instance in instances:
        instance.mode = "hang"
    transport = kitsd.Transport(registry, hedge=lb.Hedge(delay=0.01))
    client = httpx.Client(transport=transport, base_url="http://users")
    ended: list[BaseException] = []

    def call() -> None:
        try:
            client.get("/", timeout=10.0)
        except BaseException as error:  # recorded for the assertion
            ended.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: all(instance.total() == 1 for instance in instances))
        began = time.monotonic()
        client.close()
        took = time.monotonic() - began
        caller.join(2.0)
        assert not caller.is_alive()  # the call did not wait out its 10 s either
    finally:
        for instance in instances:
            instance.release.set()
        caller.join()
    assert took < 1.0  # was the hung attempts' whole timeout
    assert len(ended) == 1
    assert isinstance(ended[0], RuntimeError)
    assert "closed" in str(ended[0])


def test_async_closing_does_not_wait_for_a_hung_attempt(
    two: tuple[sd.MemoryRegistry, list[Instance]],
) -> None:
    registry, instances = two
    for instance in instances:
        instance.mode = "hang"

    async def main() -> tuple[float, float]:
        transport = kitsd.AsyncTransport(registry, hedge=lb.Hedge(delay=0.01))
        client = httpx.AsyncClient(transport=transport, base_url="http://users")
        call = asyncio.create_task(client.get("/", timeout=10.0))
        await async_wait_for(lambda: all(i.total() == 1 for i in instances))
        began = time.monotonic()
        await client.aclose()
        took = time.monotonic() - began
        with pytest.raises(RuntimeError, match="closed"):
            await call
        return took, time.monotonic() - began

    try:
        took, ended = asyncio.run(main())
    finally:
        for instance in instances:
            instance.release.set()
    assert took < 1.0
    assert ended < 2.0  # the call in flight did not wait out its 10 s


def test_httpcore_still_emits_the_event_the_cancel_fence_waits_for(
    two: tuple[sd.MemoryRegistry, list[Instance]],
) -> None:
    """Contract of kitsd/transport/_httpcore_cancel.py with the installed httpcore."""
    _, instances = two
    seen: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{instances[0].address}/",
                                        extensions={"trace": trace})
            assert response.status_code == 200

    asyncio.run(main())
    assert any(name.endswith(_httpcore_cancel.ON_THE_WIRE) for name in seen), seen


def test_a_discard_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The disposal of a loser never changes the call's outcome."""
    def discard(result: Any) -> None:
        raise RuntimeError("cannot close")

    release = threading.Event()

    def slow(request: Any) -> str:
        release.wait(5)
        return "slow"

    def fast(request: Any) -> str:
        return "fast"

    source = sd.Endpointer(sd.FixedInstancer(["a:1", "b:1"]),
                           lambda instance: slow if instance == "a:1" else fast)
    with source, lb.retry(2, 5.0, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.01),
                          discard=discard) as call:
        assert call("x") == "fast"
        release.set()
        wait_for(lambda: "cannot close" in caplog.text, timeout=5.0)


def test_a_requests_own_trace_still_hears_every_event(
    two: tuple[sd.MemoryRegistry, list[Instance]],
) -> None:
    """The fence chains the request's ``trace`` extension and hands it back once the
    request is on the wire: the caller's trace sees the same events as without it."""
    registry, _ = two
    seen: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    async def main() -> None:
        transport = kitsd.AsyncTransport(registry)
        async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
            for _ in range(2):  # a new connection, then a kept-alive one
                response = await client.get("/", extensions={"trace": trace})
                assert response.status_code == 200

    asyncio.run(main())
    for name in ("connection.connect_tcp.started", "http11.send_request_headers.started",
                 "http11.receive_response_headers.complete", "http11.response_closed.complete"):
        assert name in seen, (name, seen)
    assert seen.count("http11.send_request_headers.started") == 2
    assert seen.count("http11.response_closed.complete") == 2
