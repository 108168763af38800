"""sd.aio: EventStream and AsyncRegistrar over the in-process registry."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kitsd import sd


async def _next(stream: sd.EventStream) -> sd.Event:
    return await asyncio.wait_for(anext(stream), 5)


async def test_stream_starts_with_the_current_state_and_follows_changes() -> None:
    registry = sd.MemoryRegistry()
    registry.registrar("svc", "10.0.0.1:80").register()
    with registry.instancer("svc") as instancer:
        async with sd.EventStream(instancer) as stream:
            assert await _next(stream) == sd.Event(("10.0.0.1:80",))
            registry.registrar("svc", "10.0.0.2:80").register()  # on the loop's thread
            assert await _next(stream) == sd.Event(("10.0.0.1:80", "10.0.0.2:80"))


async def test_changes_from_other_threads_arrive_in_order() -> None:
    registry = sd.MemoryRegistry()
    with registry.instancer("svc") as instancer:
        async with sd.EventStream(instancer) as stream:
            assert await _next(stream) == sd.Event()

            def churn() -> None:
                for port in range(1, 21):
                    registry.registrar("svc", f"10.0.0.1:{port}").register()

            thread = threading.Thread(target=churn)
            thread.start()
            seen = [len((await _next(stream)).instances) for _ in range(20)]
            thread.join()
    assert seen == list(range(1, 21))


async def test_aclose_unsubscribes_and_ends_iteration() -> None:
    registry = sd.MemoryRegistry()
    instancer = registry.instancer("svc")
    stream = sd.EventStream(instancer)
    await stream.aclose()
    await stream.aclose()  # idempotent
    events = [event async for event in stream]
    assert events == [sd.Event()]  # what was delivered before the close, then the end
    registry.registrar("svc", "10.0.0.1:80").register()
    assert not [event async for event in stream]
    instancer.stop()


def test_stream_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        sd.EventStream(sd.FixedInstancer([]))


async def test_async_registrar_registers_without_blocking_the_loop() -> None:
    registry = sd.MemoryRegistry()
    registrar = registry.registrar("svc", "10.0.0.1:80")
    loop_threads: set[int] = set()

    class Recording:
        def register(self) -> None:
            loop_threads.add(threading.get_ident())
            registrar.register()

        def deregister(self) -> None:
            loop_threads.add(threading.get_ident())
            registrar.deregister()

    async with sd.AsyncRegistrar(Recording()):  # type: ignore[arg-type]
        assert registry.instances("svc") == ("10.0.0.1:80",)
    assert registry.instances("svc") == ()
    assert threading.get_ident() not in loop_threads  # ran in worker threads
