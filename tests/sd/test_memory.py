"""Tests for sd.memory: the in-process MemoryRegistry and its registrars."""

from __future__ import annotations

import threading

import pytest

from kitsd.core.errors import InvalidInstanceError
from kitsd.sd.event import Event
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instancer import Instancer
from kitsd.sd.memory import MemoryRegistrar, MemoryRegistry
from kitsd.sd.registrar import Registrar


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def instances(self) -> list[tuple[str, ...]]:
        with self._lock:
            return [event.instances for event in self.events]


def test_registry_hands_out_protocol_objects() -> None:
    registry = MemoryRegistry()
    registrar = registry.registrar("svc", "a:1")
    assert isinstance(registrar, Registrar)
    assert isinstance(registrar, MemoryRegistrar)
    assert isinstance(registry.instancer("svc"), Instancer)


def test_register_and_deregister_are_idempotent() -> None:
    registry = MemoryRegistry()
    registrar = registry.registrar("svc", "a:1")
    registrar.register()
    registrar.register()
    assert registry.instances("svc") == ("a:1",)
    registrar.deregister()
    assert registry.instances("svc") == ()
    registrar.deregister()
    assert registry.instances("svc") == ()


def test_deregister_before_register_is_a_no_op() -> None:
    registry = MemoryRegistry()
    other = registry.registrar("svc", "a:1")
    other.register()
    registry.registrar("svc", "a:1").deregister()  # never registered: must not remove other's
    assert registry.instances("svc") == ("a:1",)


def test_registrar_as_context_manager_registers_and_deregisters() -> None:
    registry = MemoryRegistry()
    with registry.registrar("svc", "a:1") as registrar:
        assert registry.instances("svc") == ("a:1",)
        assert registrar.instance == "a:1"
    assert registry.instances("svc") == ()


def test_context_manager_deregisters_when_the_body_raises() -> None:
    registry = MemoryRegistry()
    with pytest.raises(RuntimeError, match="boom"), registry.registrar("svc", "a:1"):
        raise RuntimeError("boom")
    assert registry.instances("svc") == ()


def test_two_registrars_of_one_instance_keep_it_until_both_deregister() -> None:
    registry = MemoryRegistry()
    first = registry.registrar("svc", "a:1")
    second = registry.registrar("svc", "A:1")  # the same instance once normalised
    first.register()
    second.register()
    assert registry.instances("svc") == ("a:1",)
    first.deregister()
    assert registry.instances("svc") == ("a:1",)
    second.deregister()
    assert registry.instances("svc") == ()


def test_registrar_normalises_its_instance() -> None:
    registrar = MemoryRegistry().registrar("svc", "[0:0::1]:80")
    assert registrar.instance == normalize_instance("[::1]:80")
    assert "svc" in repr(registrar)


def test_instancer_replays_current_state_then_follows_changes() -> None:
    registry = MemoryRegistry()
    registry.registrar("svc", "b:2").register()
    recorder = Recorder()
    instancer = registry.instancer("svc")
    instancer.subscribe(recorder)
    assert recorder.instances == [("b:2",)]
    a = registry.registrar("svc", "a:1")
    a.register()
    a.deregister()
    assert recorder.instances == [("b:2",), ("a:1", "b:2"), ("b:2",)]
    assert all(event.error is None for event in recorder.events)


def test_instancer_of_an_unknown_service_replays_nothing_registered() -> None:
    recorder = Recorder()
    MemoryRegistry().instancer("nobody").subscribe(recorder)
    assert recorder.events == [Event()]


def test_an_unchanged_state_is_not_resent() -> None:
    registry = MemoryRegistry()
    recorder = Recorder()
    registry.instancer("svc").subscribe(recorder)
    first, second = registry.registrar("svc", "a:1"), registry.registrar("svc", "a:1")
    first.register()
    second.register()  # the set of instances did not change
    first.deregister()  # nor here: second still holds it
    assert recorder.instances == [(), ("a:1",)]


def test_instances_come_sorted() -> None:
    registry = MemoryRegistry()
    recorder = Recorder()
    registry.instancer("svc").subscribe(recorder)
    for instance in ["c:1", "a:1", "b:1"]:
        registry.registrar("svc", instance).register()
    assert all(list(instances) == sorted(instances) for instances in recorder.instances)
    assert recorder.instances[-1] == ("a:1", "b:1", "c:1")


def test_services_are_isolated() -> None:
    registry = MemoryRegistry()
    users, orders = Recorder(), Recorder()
    registry.instancer("users").subscribe(users)
    registry.instancer("orders").subscribe(orders)
    registry.registrar("users", "u:1").register()
    assert users.instances == [(), ("u:1",)]
    assert orders.instances == [()]
    assert registry.instances("orders") == ()


def test_two_instancers_of_one_service_share_the_state() -> None:
    registry = MemoryRegistry()
    first, second = registry.instancer("svc"), registry.instancer("svc")
    registry.registrar("svc", "a:1").register()
    assert first.state == second.state == Event(("a:1",))


def test_stopping_one_instancer_leaves_the_other_subscribed() -> None:
    registry = MemoryRegistry()
    stopped, live = Recorder(), Recorder()
    with registry.instancer("svc") as first:
        first.subscribe(stopped)
    registry.instancer("svc").subscribe(live)
    registry.registrar("svc", "a:1").register()
    assert stopped.instances == [()]
    assert live.instances == [(), ("a:1",)]


@pytest.mark.parametrize("service", ["", "   ", None, 3])
def test_bad_service_names_raise_value_error(service: object) -> None:
    registry = MemoryRegistry()
    with pytest.raises(ValueError, match="service"):
        registry.instancer(service)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service"):
        registry.registrar(service, "a:1")  # type: ignore[arg-type]


@pytest.mark.parametrize("instance", ["", "host", "host:0", "::1:80", "a b:80"])
def test_bad_instances_raise_value_error(instance: str) -> None:
    with pytest.raises(ValueError, match="invalid instance") as excinfo:
        MemoryRegistry().registrar("svc", instance)
    assert isinstance(excinfo.value, InvalidInstanceError)


def test_a_subscriber_may_call_the_registry_from_inside_a_delivery(
    no_thread_leaks: None,
) -> None:
    registry = MemoryRegistry()
    follower = registry.registrar("svc", "follower:1")
    seen: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def callback(event: Event) -> None:
        seen.append((event.instances, registry.instances("svc")))
        if "leader:1" in event.instances:
            follower.register()  # a change made from inside a delivery

    later = Recorder()
    registry.instancer("svc").subscribe(callback)
    registry.instancer("svc").subscribe(later)
    # Run in a daemon thread so that a deadlock fails the test instead of hanging it.
    worker = threading.Thread(target=registry.registrar("svc", "leader:1").register, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "deadlocked calling the registry from a subscriber"
    both = ("follower:1", "leader:1")
    assert registry.instances("svc") == both
    assert [instances for instances, _ in seen] == [(), ("leader:1",), both]
    assert later.instances == [(), ("leader:1",), both]


def test_concurrent_registrations_end_consistent(no_thread_leaks: None) -> None:
    registry = MemoryRegistry()
    recorder = Recorder()
    registry.instancer("svc").subscribe(recorder)
    workers, per_worker = 4, 50
    barrier = threading.Barrier(workers)

    def work(worker: int) -> None:
        barrier.wait()
        for n in range(per_worker):
            registrar = registry.registrar("svc", f"w{worker}:{n + 1}")
            registrar.register()
            if n % 2:
                registrar.deregister()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = tuple(sorted(
        f"w{worker}:{n + 1}" for worker in range(workers) for n in range(per_worker) if not n % 2
    ))
    assert registry.instances("svc") == expected
    assert recorder.instances[-1] == expected
    # Every delivered snapshot differs from the one before it.
    assert all(a != b for a, b in zip(recorder.instances, recorder.instances[1:], strict=False))


def test_changes_reach_subscribers_with_a_delta_and_no_resort() -> None:
    registry = MemoryRegistry()
    events: list[Event] = []
    registry.instancer("svc").subscribe(events.append)
    registry.registrar("svc", "b:1").register()
    registry.registrar("svc", "a:1").register()
    registry.registrar("svc", "a:1").register()  # the same instance again: no news
    assert [event.instances for event in events] == [(), ("b:1",), ("a:1", "b:1")]
    last = events[-1]
    assert last.delta is not None
    assert last.delta.base is events[-2].instances
    assert (last.delta.added, last.delta.removed) == (("a:1",), ())
    assert registry.instances("svc") is last.instances
