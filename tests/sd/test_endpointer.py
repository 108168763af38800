"""Tests for sd.endpointer.Endpointer, driven from plain threads (async twins live in
test_endpointer_async.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import Counter
from typing import Any

import pytest

from kitsd.core.errors import MisuseError
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster, Callback, FixedInstancer, InstancerHandle
from kitsd.sd.memory import MemoryRegistrar, MemoryRegistry
from tests.helpers import wait_for


class Ep:
    """An endpoint with a sync ``close()`` that counts its closes."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.closes = 0

    def __call__(self, request: Any) -> tuple[str, Any]:
        return self.instance, request

    def close(self) -> None:
        self.closes += 1


class AsyncOnlyEp:
    """An endpoint whose only close is ``async def aclose()``."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.closes = 0
        self.threads: list[int] = []

    async def __call__(self, request: Any) -> tuple[str, Any]:
        return self.instance, request

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.threads.append(threading.get_ident())
        self.closes += 1


class Factory:
    """Builds endpoints of ``kind``; remembers each; fails for instances in ``failing``."""

    def __init__(self, kind: type[Any] = Ep, failing: set[str] | None = None) -> None:
        self.kind = kind
        self.calls: list[str] = []
        self.made: list[Any] = []
        self.failing = set() if failing is None else failing
        self._lock = threading.Lock()

    def __call__(self, instance: str) -> Any:
        with self._lock:
            self.calls.append(instance)
            if instance in self.failing:
                raise RuntimeError(f"cannot build {instance}")
            endpoint = self.kind(instance)
            self.made.append(endpoint)
            return endpoint


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingInstancer(InstancerHandle):
    """An instancer that counts subscribe/unsubscribe calls."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        super().__init__(broadcaster)
        self.subscribed: list[Callback] = []
        self.unsubscribed: list[Callback] = []

    def subscribe(self, callback: Callback) -> None:
        self.subscribed.append(callback)
        super().subscribe(callback)

    def unsubscribe(self, callback: Callback) -> None:
        self.unsubscribed.append(callback)
        super().unsubscribe(callback)


def live(endpointer: Endpointer) -> list[Any]:
    """``endpointer.endpoints()``, typed loosely: these tests build several endpoint kinds."""
    return list(endpointer.endpoints())


def names(endpoints: list[Any]) -> list[str]:
    return [endpoint.instance for endpoint in endpoints]


def set_instances(
    registry: MemoryRegistry, registrars: dict[str, MemoryRegistrar], *instances: str
) -> None:
    """Make ``instances`` exactly the registered set of service "svc"."""
    for instance in instances:
        if instance not in registrars:
            registrars[instance] = registry.registrar("svc", instance)
            registrars[instance].register()
    for instance in [i for i in registrars if i not in instances]:
        registrars.pop(instance).deregister()


def test_go_kit_scenario_a_b_then_a_b_c_then_b_c() -> None:
    registry, registrars = MemoryRegistry(), dict[str, MemoryRegistrar]()
    factory = Factory()
    set_instances(registry, registrars, "a:1", "b:1")
    with Endpointer(registry.instancer("svc"), factory) as endpointer:
        first = live(endpointer)
        assert names(first) == ["a:1", "b:1"]
        a, b = first

        set_instances(registry, registrars, "a:1", "b:1", "c:1")
        second = live(endpointer)
        assert names(second) == ["a:1", "b:1", "c:1"]
        assert second[0] is a
        assert second[1] is b
        assert [endpoint.closes for endpoint in factory.made] == [0, 0, 0]

        set_instances(registry, registrars, "b:1", "c:1")
        third = live(endpointer)
        assert names(third) == ["b:1", "c:1"]
        assert third[0] is b
        # retired endpoints are closed on the Endpointer's closer thread
        wait_for(lambda: a.closes == 1, what="a:1's endpoint closed")
        assert b.closes == 0

        assert factory.calls == ["a:1", "b:1", "c:1"]
    # Closing the Endpointer closes the rest; every endpoint exactly once.
    assert [endpoint.closes for endpoint in factory.made] == [1, 1, 1]


def test_endpoints_in_sorted_instance_order_one_per_distinct_instance() -> None:
    factory = Factory()
    raw = ["c:3", "a:1", "B:2", "b:2", "a:1"]
    with Endpointer(FixedInstancer(raw), factory) as endpointer:
        endpoints = live(endpointer)
        assert names(endpoints) == ["a:1", "b:2", "c:3"]
        assert endpointer.instances == ("a:1", "b:2", "c:3")
        assert sorted(factory.calls) == ["a:1", "b:2", "c:3"]
        assert endpoints[0]("req") == ("a:1", "req")


def test_endpoints_returns_a_fresh_list() -> None:
    with Endpointer(FixedInstancer(["a:1"]), Factory()) as endpointer:
        endpointer.endpoints().clear()
        assert names(endpointer.endpoints()) == ["a:1"]


def test_factory_called_once_per_new_instance_across_many_events() -> None:
    registry, registrars = MemoryRegistry(), dict[str, MemoryRegistrar]()
    factory = Factory()
    with Endpointer(registry.instancer("svc"), factory):
        set_instances(registry, registrars, "a:1")
        set_instances(registry, registrars, "a:1", "b:1")
        set_instances(registry, registrars, "b:1")
        set_instances(registry, registrars, "a:1", "b:1")  # a came back: a new endpoint
    assert Counter(factory.calls) == Counter({"a:1": 2, "b:1": 1})
    assert all(endpoint.closes == 1 for endpoint in factory.made)


def test_aclose_only_endpoints_are_closed_once_without_a_loop() -> None:
    registry, registrars = MemoryRegistry(), dict[str, MemoryRegistrar]()
    factory = Factory(AsyncOnlyEp)
    set_instances(registry, registrars, "a:1", "b:1")
    endpointer = Endpointer(registry.instancer("svc"), factory)
    a, b = live(endpointer)
    set_instances(registry, registrars, "b:1")
    # Closed on the Endpointer's closer thread, not on the thread that deregistered.
    wait_for(lambda: a.closes == 1, what="a closed")
    assert b.closes == 0
    endpointer.close()  # waits for the closer
    endpointer.close()
    assert (a.closes, b.closes) == (1, 1)


def test_close_is_idempotent_and_closes_each_endpoint_once() -> None:
    factory = Factory()
    endpointer = Endpointer(FixedInstancer(["a:1", "b:1"]), factory)
    endpointer.close()
    endpointer.close()
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]


def test_close_unsubscribes() -> None:
    broadcaster = Broadcaster()
    instancer = CountingInstancer(broadcaster)
    factory = Factory()
    endpointer = Endpointer(instancer, factory)
    assert len(instancer.subscribed) == 1
    endpointer.close()
    assert instancer.unsubscribed == instancer.subscribed
    broadcaster.publish(Event(("a:1",)))
    assert factory.calls == []


def test_an_event_arriving_after_close_is_ignored() -> None:
    # An instancer may deliver once more while close() runs (an in-flight delivery);
    # simulate it with one whose unsubscribe does not take effect.
    class Sticky(InstancerHandle):
        def unsubscribe(self, callback: Callback) -> None:
            pass

    broadcaster = Broadcaster(Event(("a:1",)))
    factory = Factory()
    endpointer = Endpointer(Sticky(broadcaster), factory)
    endpointer.close()
    broadcaster.publish(Event(("a:1", "b:1")))
    assert factory.calls == ["a:1"]
    assert [endpoint.closes for endpoint in factory.made] == [1]
    assert endpointer.instances == ()


def test_later_registry_changes_do_not_call_the_factory_after_close() -> None:
    registry, registrars = MemoryRegistry(), dict[str, MemoryRegistrar]()
    factory = Factory()
    set_instances(registry, registrars, "a:1")
    Endpointer(registry.instancer("svc"), factory).close()
    set_instances(registry, registrars, "a:1", "b:1")
    assert factory.calls == ["a:1"]


def test_endpoints_after_close_raises_runtime_error() -> None:
    endpointer = Endpointer(FixedInstancer(["a:1"]), Factory())
    endpointer.close()
    with pytest.raises(RuntimeError, match="closed"):
        endpointer.endpoints()


def test_context_manager_closes_on_exit_even_on_error() -> None:
    factory = Factory()
    with pytest.raises(KeyError), Endpointer(FixedInstancer(["a:1"]), factory) as endpointer:
        raise KeyError("body failed")
    assert factory.made[0].closes == 1
    with pytest.raises(RuntimeError):
        endpointer.endpoints()


def test_a_raising_factory_is_logged_skipped_and_retried_on_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, registrars = MemoryRegistry(), dict[str, MemoryRegistrar]()
    factory = Factory(failing={"b:1"})
    set_instances(registry, registrars, "a:1", "b:1")
    with caplog.at_level(logging.ERROR):
        endpointer = Endpointer(registry.instancer("svc"), factory)
    with endpointer:
        assert names(endpointer.endpoints()) == ["a:1"]
        assert any("b:1" in record.getMessage() for record in caplog.records)
        factory.failing.clear()
        set_instances(registry, registrars, "a:1", "b:1", "c:1")  # the next event
        assert names(endpointer.endpoints()) == ["a:1", "b:1", "c:1"]
    assert factory.calls == ["a:1", "b:1", "b:1", "c:1"]


def test_errors_keep_the_last_endpoints_by_default() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    clock = Clock()
    factory = Factory()
    with Endpointer(InstancerHandle(broadcaster), factory, clock=clock) as endpointer:
        broadcaster.publish_error(RuntimeError("registry down"))
        clock.now += 1e9
        assert names(endpointer.endpoints()) == ["a:1"]
        assert factory.made[0].closes == 0


def test_invalidate_on_error_with_an_injected_clock() -> None:
    timeout = 30.0
    broadcaster = Broadcaster(Event(("a:1", "b:1")))
    clock = Clock()
    factory = Factory()
    endpointer = Endpointer(
        InstancerHandle(broadcaster), factory, invalidate_on_error=timeout, clock=clock
    )
    a, b = live(endpointer)

    first = ConnectionError("sd error")
    broadcaster.publish(Event(("a:1", "b:1"), first))
    assert endpointer.endpoints() == [a, b]

    clock.now += timeout / 2
    assert endpointer.endpoints() == [a, b]
    # A second, different error: neither replaces the first nor moves the deadline.
    broadcaster.publish(Event(("a:1", "b:1"), ConnectionError("another sd error")))
    assert (a.closes, b.closes) == (0, 0)

    clock.now += timeout / 2
    with pytest.raises(ConnectionError) as excinfo:
        endpointer.endpoints()
    assert excinfo.value is first
    assert (a.closes, b.closes) == (1, 1)
    assert endpointer.instances == ()

    # Still in error: the same first error, and nothing is closed twice.
    with pytest.raises(ConnectionError) as again:
        endpointer.endpoints()
    assert again.value is first
    assert (a.closes, b.closes) == (1, 1)

    # A good event recovers, with new endpoints from the factory.
    broadcaster.publish(Event(("a:1", "b:1")))
    recovered = live(endpointer)
    assert names(recovered) == ["a:1", "b:1"]
    assert not any(endpoint is a or endpoint is b for endpoint in recovered)
    endpointer.close()
    assert all(endpoint.closes == 1 for endpoint in factory.made)
    assert len(factory.made) == 4


def test_invalidation_closes_exactly_once_under_concurrent_readers(
    no_thread_leaks: None,
) -> None:
    broadcaster = Broadcaster(Event(("a:1", "b:1", "c:1")))
    clock = Clock()
    factory = Factory()
    endpointer = Endpointer(
        InstancerHandle(broadcaster), factory, invalidate_on_error=1.0, clock=clock
    )
    error = RuntimeError("down")
    broadcaster.publish_error(error)
    clock.now += 1.0
    readers = 8
    barrier = threading.Barrier(readers)
    raised: list[BaseException] = []
    lock = threading.Lock()

    def read() -> None:
        barrier.wait()
        try:
            endpointer.endpoints()
        except RuntimeError as caught:
            with lock:
                raised.append(caught)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(raised) == readers
    assert all(caught is error for caught in raised)
    assert [endpoint.closes for endpoint in factory.made] == [1, 1, 1]
    endpointer.close()
    assert [endpoint.closes for endpoint in factory.made] == [1, 1, 1]


def test_negative_invalidate_on_error_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalidate_on_error"):
        Endpointer(FixedInstancer(["a:1"]), Factory(), invalidate_on_error=-0.5)


def test_subscribing_to_a_stopped_instancer_fails() -> None:
    instancer = FixedInstancer(["a:1"])
    instancer.stop()
    with pytest.raises(RuntimeError):
        Endpointer(instancer, Factory())


def test_a_close_that_raises_is_logged_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fragile(Ep):
        def close(self) -> None:
            super().close()
            raise OSError(f"cannot close {self.instance}")

    factory = Factory(Fragile)
    endpointer = Endpointer(FixedInstancer(["a:1", "b:1"]), factory)
    with caplog.at_level(logging.ERROR, logger="kitsd.core.endpoint"):
        endpointer.close()
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]
    assert "cannot close a:1" in caplog.text
    assert "cannot close b:1" in caplog.text


def test_churn_from_many_threads_closes_every_endpoint_exactly_once(
    no_thread_leaks: None,
) -> None:
    registry = MemoryRegistry()
    factory = Factory()
    endpointer = Endpointer(registry.instancer("svc"), factory)
    workers, rounds = 4, 50
    barrier = threading.Barrier(workers + 1)
    seen_bad: list[list[str]] = []

    def churn(worker: int) -> None:
        barrier.wait()
        for n in range(rounds):
            with registry.registrar("svc", f"w{worker}:{n + 1}"):
                pass

    def read() -> None:
        barrier.wait()
        while any(thread.is_alive() for thread in writers):
            current = names(endpointer.endpoints())
            if current != sorted(set(current)):
                seen_bad.append(current)

    writers = [threading.Thread(target=churn, args=(i,)) for i in range(workers)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in [*writers, reader]:
        thread.join()
    assert seen_bad == []
    assert endpointer.endpoints() == []
    endpointer.close()
    assert len(factory.made) == workers * rounds
    assert all(endpoint.closes == 1 for endpoint in factory.made)


class LoopBoundEp:
    """An async endpoint shaped like ``sd.http``'s: its client belongs to ``loop``, so
    ``aclose()`` runs the real close there and waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, closing: threading.Event) -> None:
        self.loop = loop
        self.closing = closing
        self.closes = 0

    async def __call__(self, request: Any) -> Any:
        return request

    async def aclose(self) -> None:
        self.closing.set()

        async def on_own_loop() -> None:
            self.closes += 1

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_own_loop(), self.loop))


@pytest.mark.parametrize("call_on_loop", ["register", "new endpointer", "event stream"])
def test_closing_async_endpoints_from_another_thread_does_not_deadlock(
    call_on_loop: str,
) -> None:
    # Issue 7.1: an Endpointer made outside a loop over endpoints whose client lives on a
    # loop thread; another thread deregisters an instance while the loop thread makes a
    # sync call needing the registry's or the broadcaster's lock.  The close must not
    # run (and wait for the loop) on the deregistering thread, which holds those locks.
    from kitsd.sd.aio import EventStream

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    closing = threading.Event()
    made: list[LoopBoundEp] = []

    def factory(_instance: str) -> LoopBoundEp:
        made.append(LoopBoundEp(loop, closing))
        return made[-1]

    registry = MemoryRegistry()
    leaving = registry.registrar("svc", "a:1")
    leaving.register()
    endpointer = Endpointer(registry.instancer("svc"), factory)  # no loop running here

    async def on_loop() -> None:
        # Block the loop thread, as sync code in a coroutine does, until a close started.
        assert closing.wait(10)
        if call_on_loop == "register":
            registry.registrar("svc", "b:1").register()
        elif call_on_loop == "new endpointer":
            Endpointer(registry.instancer("svc"), factory).close()
        else:
            await EventStream(registry.instancer("svc")).aclose()

    on_loop_done = asyncio.run_coroutine_threadsafe(on_loop(), loop)
    deregistering = threading.Thread(target=leaving.deregister, daemon=True)
    deregistering.start()
    deregistering.join(10)
    assert not deregistering.is_alive(), "deregister() is stuck closing the endpoint"
    on_loop_done.result(10)  # TimeoutError if the loop thread is stuck on a lock
    wait_for(lambda: made[0].closes == 1, what="the endpoint closed on its loop")
    endpointer.close()
    assert made[0].closes == 1
    loop.call_soon_threadsafe(loop.stop)
    loop_thread.join(10)
    loop.close()


def test_close_waits_for_the_closer_thread(no_thread_leaks: None) -> None:
    # The closes handed to the closer thread are done when close() returns, and the
    # thread is gone.
    factory = Factory(AsyncOnlyEp)
    endpointer = Endpointer(FixedInstancer(["a:1", "b:1"]), factory)
    assert len(endpointer.endpoints()) == 2
    endpointer.close()
    assert [endpoint.closes for endpoint in factory.made] == [1, 1]


@pytest.mark.parametrize("instancer", [None, 5, "static://a:1", object()])
def test_an_instancer_that_is_not_one_is_a_type_error(instancer: Any) -> None:
    with pytest.raises(TypeError, match=r"instancer must be an sd\.Instancer"):
        Endpointer(instancer, Factory())


@pytest.mark.parametrize("factory", [None, 5, "factory"])
def test_a_factory_that_is_not_callable_is_a_type_error_and_subscribes_nothing(
    factory: Any,
) -> None:
    instancer = CountingInstancer(Broadcaster(Event(("a:1",))))
    with pytest.raises(TypeError, match="factory must be callable"):
        Endpointer(instancer, factory)
    assert instancer.subscribed == []


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(float("nan"), ValueError), (-1.0, ValueError), (-math.inf, ValueError), ("5", TypeError),
     (True, TypeError), ([1], TypeError)],
)
def test_a_bad_invalidate_on_error_fails_at_construction_naming_it(
    timeout: Any, error: type[Exception]
) -> None:
    instancer = CountingInstancer(Broadcaster(Event(("a:1",))))
    with pytest.raises(error, match="invalidate_on_error") as excinfo:
        Endpointer(instancer, Factory(), invalidate_on_error=timeout)
    if error is ValueError:
        assert isinstance(excinfo.value, MisuseError)
    assert instancer.subscribed == []


def test_an_infinite_invalidate_on_error_never_invalidates() -> None:
    clock = Clock()
    broadcaster = Broadcaster(Event(("a:1",)))
    with Endpointer(InstancerHandle(broadcaster), Factory(), invalidate_on_error=math.inf,
                    clock=clock) as endpointer:
        broadcaster.publish_error(RuntimeError("down"))
        clock.now += 1e12
        assert names(live(endpointer)) == ["a:1"]


@pytest.mark.parametrize("returned", [None, 5, "a:1"])
def test_a_factory_returning_a_non_endpoint_is_skipped_like_one_that_raised(
    returned: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 7.9: a factory returning None was served as an endpoint ("not callable").
    bad = {"b:1"}

    def factory(instance: str) -> Any:
        return returned if instance in bad else Ep(instance)

    broadcaster = Broadcaster(Event(("a:1", "b:1")))
    with caplog.at_level(logging.ERROR, logger="kitsd.sd.endpoint_cache"), Endpointer(
        InstancerHandle(broadcaster), factory
    ) as endpointer:
        assert names(live(endpointer)) == ["a:1"]
        assert endpointer.snapshot().instances == ("a:1",)
        assert any("b:1" in record.getMessage() for record in caplog.records)
        # Tried again on the next event.
        bad.clear()
        broadcaster.publish(Event(("a:1", "b:1", "c:1")))
        assert names(live(endpointer)) == ["a:1", "b:1", "c:1"]


def test_a_pick_does_not_wait_for_an_update_in_progress() -> None:
    # Issue 6.7: picks read one immutable reference and take no lock, so an update that
    # holds the Endpointer's lock (here: a slow factory) does not stall them.
    entered, release = threading.Event(), threading.Event()

    def factory(instance: str) -> Ep:
        if instance == "b:1":
            entered.set()
            assert release.wait(10)
        return Ep(instance)

    broadcaster = Broadcaster(Event(("a:1",)))
    endpointer = Endpointer(InstancerHandle(broadcaster), factory)
    updating = threading.Thread(target=broadcaster.publish, args=(Event(("a:1", "b:1")),))
    updating.start()
    results: list[tuple[Any, ...]] = []
    try:
        assert entered.wait(10)
        reader = threading.Thread(
            target=lambda: results.append(
                (endpointer.snapshot(), endpointer.endpoints(), endpointer.instances)
            ),
            daemon=True,
        )
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a pick waited for the update to finish"
    finally:
        release.set()
        updating.join(10)
    snapshot, endpoints, instances = results[0]
    assert snapshot.instances == instances == ("a:1",)
    assert names(endpoints) == ["a:1"]
    assert endpointer.snapshot().instances == ("a:1", "b:1")
    endpointer.close()


def test_a_slow_sync_close_never_blocks_the_thread_that_published_the_change() -> None:
    """A retired endpoint's close() runs on the Endpointer's closer thread, holding none
    of the registry's or broadcaster's locks: the deregistering thread returns at once,
    and the registry stays usable while the close is still running."""
    release = threading.Event()
    closed_on: list[threading.Thread] = []

    class SlowClose:
        def __call__(self, request: object) -> object:
            return request

        def close(self) -> None:
            closed_on.append(threading.current_thread())
            release.wait(10)

    registry = MemoryRegistry()
    registrar = registry.registrar("svc", "a:1")
    registrar.register()
    with Endpointer(registry.instancer("svc"), lambda instance: SlowClose()) as endpointer:
        assert endpointer.instances == ("a:1",)
        publisher = threading.Thread(target=registrar.deregister)
        publisher.start()
        publisher.join(5)
        try:
            assert not publisher.is_alive(), "deregister() waited for the endpoint's close()"
            wait_for(lambda: bool(closed_on), what="close() started")
            assert closed_on[0] is not publisher
            # the registry's locks are free while the close runs
            other = registry.registrar("svc", "b:1")
            other.register()
            assert registry.instances("svc") == ("b:1",)
        finally:
            release.set()
            publisher.join(5)


# --- why the set is empty: registry down, or no instances (issue 15.4) ----------------------


def test_answered_and_error_tell_an_unreachable_registry_from_an_empty_service() -> None:
    broadcaster = Broadcaster(pending=True)
    with Endpointer(InstancerHandle(broadcaster), Factory()) as endpointer:
        assert (endpointer.answered, endpointer.error) == (False, None)  # nothing heard yet
        down = ConnectionError("cannot connect to etcd at 127.0.0.1:1")
        broadcaster.publish_error(down)
        assert endpointer.endpoints() == []
        assert (endpointer.answered, endpointer.error) == (False, down)  # never succeeded
        broadcaster.publish(Event())
        assert (endpointer.answered, endpointer.error) == (True, None)  # answered: none
        again = ConnectionError("etcd went away")
        broadcaster.publish_error(again)
        assert (endpointer.answered, endpointer.error) == (True, again)  # it did answer once


def test_error_does_not_change_what_the_endpointer_serves() -> None:
    """The last endpoints keep serving on error (API.md): the new properties only report."""
    broadcaster = Broadcaster(Event(("a:1",)))
    clock = Clock()
    with Endpointer(InstancerHandle(broadcaster), Factory(), invalidate_on_error=5.0,
                    clock=clock) as endpointer:
        assert endpointer.answered
        broadcaster.publish_error(RuntimeError("registry down"))
        assert names(endpointer.endpoints()) == ["a:1"]
        assert isinstance(endpointer.error, RuntimeError)
        clock.now += 10
        with pytest.raises(RuntimeError, match="registry down"):
            endpointer.endpoints()
        assert endpointer.answered
