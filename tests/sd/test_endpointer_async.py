"""Async tests for sd.endpointer.Endpointer: async endpoints, aclose(), and closes
that must run on the Endpointer's event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest

from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster, FixedInstancer, InstancerHandle
from kitsd.sd.memory import MemoryRegistry
from tests.helpers import async_wait_for


class AsyncOnlyEp:
    """An async endpoint whose only close is ``async def aclose()``.

    ``aclose`` waits for ``release`` (set by default) and records the loop and
    thread it ran on.
    """

    def __init__(self, instance: str, release: asyncio.Event | None = None) -> None:
        self.instance = instance
        self.release = release
        self.started = threading.Event()
        self.closes = 0
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.threads: list[int] = []

    async def __call__(self, request: Any) -> tuple[str, Any]:
        await asyncio.sleep(0)
        return self.instance, request

    async def aclose(self) -> None:
        self.started.set()
        await asyncio.sleep(0)
        if self.release is not None:
            # Bounded, so a broken Endpointer that runs this on the wrong loop fails
            # the test instead of hanging it.
            await asyncio.wait_for(self.release.wait(), 10)
        self.loops.append(asyncio.get_running_loop())
        self.threads.append(threading.get_ident())
        self.closes += 1


class Factory:
    def __init__(self, release: asyncio.Event | None = None) -> None:
        self.release = release
        self.calls: list[str] = []
        self.made: list[AsyncOnlyEp] = []

    def __call__(self, instance: str) -> AsyncOnlyEp:
        self.calls.append(instance)
        endpoint = AsyncOnlyEp(instance, self.release)
        self.made.append(endpoint)
        return endpoint


def live(endpointer: Endpointer) -> list[AsyncOnlyEp]:
    """``endpointer.endpoints()``, typed as the endpoints these tests build."""
    return cast("list[AsyncOnlyEp]", endpointer.endpoints())


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def yield_a_few_times() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_async_endpoints_are_served_in_sorted_order() -> None:
    async with Endpointer(FixedInstancer(["b:1", "a:1"]), Factory()) as endpointer:
        endpoints = endpointer.endpoints()
        assert [await endpoint("x") for endpoint in endpoints] == [("a:1", "x"), ("b:1", "x")]


async def test_aclose_awaits_async_closes() -> None:
    factory = Factory()
    endpointer = Endpointer(FixedInstancer(["a:1", "b:1"]), factory)
    await endpointer.aclose()
    # Without awaiting, the aclose tasks would not have run yet.
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]
    loop = asyncio.get_running_loop()
    assert all(endpoint.loops == [loop] for endpoint in factory.made)
    assert other_tasks() == set()


async def test_aclose_waits_until_a_slow_close_has_finished() -> None:
    release = asyncio.Event()
    factory = Factory(release)
    endpointer = Endpointer(FixedInstancer(["a:1"]), factory)
    closing = asyncio.create_task(endpointer.aclose())
    await async_wait_for(factory.made[0].started.is_set, what="aclose to start")
    await yield_a_few_times()
    assert not closing.done()
    release.set()
    await closing
    assert factory.made[0].closes == 1
    assert other_tasks() == set()


async def test_removal_inside_the_loop_closes_on_the_loop_once() -> None:
    registry = MemoryRegistry()
    a, b = registry.registrar("svc", "a:1"), registry.registrar("svc", "b:1")
    a.register()
    b.register()
    factory = Factory()
    endpointer = Endpointer(registry.instancer("svc"), factory)
    first_a, first_b = live(endpointer)
    a.deregister()
    await async_wait_for(lambda: first_a.closes == 1, what="a to close")
    assert first_b.closes == 0
    await endpointer.aclose()
    assert (first_a.closes, first_b.closes) == (1, 1)
    assert first_a.loops == [asyncio.get_running_loop()]
    assert other_tasks() == set()


async def test_sync_close_in_the_loop_then_aclose_awaits_the_pending_closes() -> None:
    release = asyncio.Event()
    factory = Factory(release)
    endpointer = Endpointer(FixedInstancer(["a:1", "b:1"]), factory)
    endpointer.close()  # schedules the aclose tasks; cannot wait for them
    assert [endpoint.closes for endpoint in factory.made] == [0, 0]
    closing = asyncio.create_task(endpointer.aclose())
    await yield_a_few_times()
    assert not closing.done()
    release.set()
    await closing
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]
    with pytest.raises(RuntimeError):
        endpointer.endpoints()


async def test_removal_from_another_thread_runs_aclose_on_the_endpointers_loop(
    no_thread_leaks: None,
) -> None:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    registry = MemoryRegistry()
    a, b = registry.registrar("svc", "a:1"), registry.registrar("svc", "b:1")
    a.register()
    b.register()
    factory = Factory(release)
    endpointer = Endpointer(registry.instancer("svc"), factory)  # made inside the loop
    first_a, first_b = live(endpointer)

    worker = threading.Thread(target=a.deregister, name="deregister-a", daemon=True)
    worker.start()
    await async_wait_for(lambda: not worker.is_alive(), what="the worker to finish")
    worker.join()
    await async_wait_for(first_a.started.is_set, what="a's aclose to start")
    assert endpointer.instances == ("b:1",)

    # aclose() must wait for the close scheduled from the other thread as well.
    closing = asyncio.create_task(endpointer.aclose())
    await yield_a_few_times()
    assert not closing.done()
    release.set()
    await closing
    assert (first_a.closes, first_b.closes) == (1, 1)
    assert first_a.loops == [loop]
    assert first_a.threads == [threading.get_ident()]  # the loop's thread, not the worker's
    assert other_tasks() == set()


async def test_async_context_manager_closes_and_awaits() -> None:
    factory = Factory()
    async with Endpointer(FixedInstancer(["a:1", "b:1"]), factory) as endpointer:
        assert len(endpointer.endpoints()) == 2
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]
    with pytest.raises(RuntimeError):
        endpointer.endpoints()
    assert other_tasks() == set()


async def test_async_context_manager_closes_when_the_body_raises() -> None:
    factory = Factory()
    with pytest.raises(LookupError):
        async with Endpointer(FixedInstancer(["a:1"]), factory):
            raise LookupError("body failed")
    assert factory.made[0].closes == 1


async def test_aclose_is_idempotent() -> None:
    factory = Factory()
    endpointer = Endpointer(FixedInstancer(["a:1"]), factory)
    await endpointer.aclose()
    await endpointer.aclose()
    endpointer.close()
    assert factory.made[0].closes == 1


async def test_invalidation_in_the_loop_closes_async_endpoints() -> None:
    clock_now = [0.0]
    broadcaster = Broadcaster(Event(("a:1",)))
    factory = Factory()
    endpointer = Endpointer(
        InstancerHandle(broadcaster),
        factory,
        invalidate_on_error=1.0,
        clock=lambda: clock_now[0],
    )
    error = RuntimeError("down")
    broadcaster.publish_error(error)
    clock_now[0] = 1.0
    with pytest.raises(RuntimeError) as excinfo:
        endpointer.endpoints()
    assert excinfo.value is error
    await endpointer.aclose()
    assert factory.made[0].closes == 1
    assert other_tasks() == set()


class LoopBoundEp:
    """Like ``sd.http``'s async endpoints: the real close runs on ``loop`` and is waited for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closes = 0

    async def __call__(self, request: Any) -> Any:
        return request

    async def aclose(self) -> None:
        async def on_own_loop() -> None:
            self.closes += 1

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_own_loop(), self.loop))


async def test_aclose_waits_for_closes_handed_to_the_closer_thread() -> None:
    # Made on a thread without a loop; an instance leaves on another thread, so its close
    # goes to the Endpointer's closer thread and needs this loop to finish.  A sync
    # close() here must not wait for it (that would block the loop it waits for);
    # aclose() awaits it.
    loop = asyncio.get_running_loop()
    made: list[LoopBoundEp] = []

    def factory(_instance: str) -> LoopBoundEp:
        made.append(LoopBoundEp(loop))
        return made[-1]

    registry = MemoryRegistry()
    leaving = registry.registrar("svc", "a:1")
    leaving.register()
    endpointer = await asyncio.to_thread(Endpointer, registry.instancer("svc"), factory)
    await asyncio.to_thread(leaving.deregister)
    endpointer.close()  # returns at once although the close still needs this loop
    await asyncio.wait_for(endpointer.aclose(), 10)
    assert [endpoint.closes for endpoint in made] == [1]
