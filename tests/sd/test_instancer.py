"""Tests for sd.instancer: Broadcaster, InstancerHandle, FixedInstancer, SharedWatches."""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Hashable

import pytest

from kitsd.core.errors import InvalidInstanceError, RegistryUnavailableError
from kitsd.core.redact import shown_address
from kitsd.sd.event import Delta, Event
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instancer import (
    Broadcaster,
    Callback,
    FixedInstancer,
    Instancer,
    InstancerHandle,
    SharedWatches,
    Stoppable,
    check_first_answer_timeout,
)


class Recorder:
    """A subscriber that records every event it receives (thread-safe)."""

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


class FakeWatch:
    """A watch that only counts how often it was stopped."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


class WatchStarter:
    """``start`` callable for SharedWatches that remembers every watch it started."""

    def __init__(self) -> None:
        self.watches: list[FakeWatch] = []

    def __call__(self, broadcaster: Broadcaster) -> Stoppable:
        watch = FakeWatch(broadcaster)
        self.watches.append(watch)
        return watch


# --- Broadcaster -------------------------------------------------------------------------


def test_subscribe_replays_the_current_state_at_once() -> None:
    broadcaster = Broadcaster(Event(("b:2", "a:1")))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert recorder.instances == [("a:1", "b:2")]


def test_subscribe_to_a_fresh_broadcaster_replays_the_empty_state() -> None:
    recorder = Recorder()
    Broadcaster().subscribe(recorder)
    assert recorder.events == [Event()]


def test_changes_are_delivered_sorted_and_deduplicated() -> None:
    broadcaster = Broadcaster()
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert broadcaster.publish(Event(("c:3", "a:1", "c:3", "b:2")))
    assert recorder.instances[-1] == ("a:1", "b:2", "c:3")
    assert broadcaster.state.instances == ("a:1", "b:2", "c:3")


def test_an_unchanged_state_is_not_resent() -> None:
    broadcaster = Broadcaster()
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert broadcaster.publish(Event(("a:1", "b:2")))
    assert not broadcaster.publish(Event(("b:2", "a:1", "a:1")))  # same set, other order
    assert len(recorder.events) == 2


def test_an_unchanged_error_is_not_resent_but_a_different_one_is() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert broadcaster.publish_error(ConnectionError("refused"))
    assert not broadcaster.publish_error(ConnectionError("refused"))  # same type and args
    assert broadcaster.publish_error(ConnectionError("reset"))  # other args
    assert broadcaster.publish_error(TimeoutError("reset"))  # other type
    errors = [event.error for event in recorder.events]
    assert [type(error) for error in errors] == [
        type(None), ConnectionError, ConnectionError, TimeoutError
    ]
    assert [error.args for error in errors if error is not None] == [
        ("refused",), ("reset",), ("reset",)
    ]


def test_publish_error_keeps_the_last_instances() -> None:
    broadcaster = Broadcaster(Event(("a:1", "b:2")))
    error = RuntimeError("registry down")
    broadcaster.publish_error(error)
    assert broadcaster.state.instances == ("a:1", "b:2")
    assert broadcaster.state.error is error


def test_a_good_event_after_an_error_is_delivered_even_with_the_same_instances() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    broadcaster.publish_error(RuntimeError("down"))
    assert broadcaster.publish(Event(("a:1",)))
    assert [event.error is None for event in recorder.events] == [True, False, True]


def test_unsubscribe_stops_deliveries() -> None:
    broadcaster = Broadcaster()
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    broadcaster.unsubscribe(recorder)
    broadcaster.publish(Event(("a:1",)))
    assert recorder.events == [Event()]


def test_unsubscribe_of_an_unknown_callback_is_ignored() -> None:
    broadcaster = Broadcaster()
    broadcaster.unsubscribe(Recorder())
    assert broadcaster.state == Event()


def test_a_raising_callback_is_logged_and_stays_subscribed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broadcaster = Broadcaster()
    calls: list[Event] = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="kitsd.sd.instancer"):
        broadcaster.subscribe(broken)
        broadcaster.subscribe(recorder)
        broadcaster.publish(Event(("a:1",)))
        broadcaster.publish(Event(("b:1",)))
    assert [event.instances for event in calls] == [(), ("a:1",), ("b:1",)]
    assert recorder.instances == [(), ("a:1",), ("b:1",)]  # later subscribers unaffected
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == len(calls)
    assert all(record.exc_info is not None for record in failures)


def test_a_callback_may_unsubscribe_itself_during_delivery() -> None:
    broadcaster = Broadcaster()
    seen: list[Event] = []

    def once(event: Event) -> None:
        seen.append(event)
        if event.instances:
            broadcaster.unsubscribe(once)

    broadcaster.subscribe(once)
    broadcaster.publish(Event(("a:1",)))
    broadcaster.publish(Event(("b:1",)))
    assert [event.instances for event in seen] == [(), ("a:1",)]


def test_a_callback_that_publishes_does_not_reorder_later_subscribers() -> None:
    broadcaster = Broadcaster()
    first, last = Recorder(), Recorder()

    def republish(event: Event) -> None:
        first(event)
        if event.instances == ("a:1",):
            assert broadcaster.publish(Event(("b:1",)))

    broadcaster.subscribe(republish)
    broadcaster.subscribe(last)
    broadcaster.publish(Event(("a:1",)))
    # Every subscriber gets a:1 before b:1 and ends on the broadcaster's state.
    assert first.instances == last.instances == [(), ("a:1",), ("b:1",)]
    assert broadcaster.state.instances == ("b:1",)


def test_subscribing_from_inside_a_delivery_gets_a_consistent_sequence() -> None:
    broadcaster = Broadcaster()
    late = Recorder()

    def trigger(event: Event) -> None:
        if event.instances == ("a:1",):
            broadcaster.publish(Event(("b:1",)))  # queued behind a:1
            broadcaster.subscribe(late)

    broadcaster.subscribe(trigger)
    broadcaster.publish(Event(("a:1",)))
    assert late.instances == [("a:1",), ("b:1",)]


def test_deliveries_are_ordered_under_concurrent_publishers(no_thread_leaks: None) -> None:
    publishers, per_publisher = 8, 500
    broadcaster = Broadcaster()
    recorders = [Recorder() for _ in range(3)]

    def slow(event: Event) -> None:
        os.sched_yield()  # invite a thread switch in the middle of a delivery

    for recorder in recorders:
        broadcaster.subscribe(recorder)
        broadcaster.subscribe(slow)
    start = threading.Barrier(publishers)

    def publish(thread: int) -> None:
        start.wait()
        for counter in range(per_publisher):
            broadcaster.publish(Event((f"t{thread}-{counter:05d}:1",)))

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so a missing lock would show
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    sequences = [recorder.instances[1:] for recorder in recorders]  # drop the replay
    # Every publish carried a new state, so every subscriber saw every one of them ...
    assert all(len(sequence) == publishers * per_publisher for sequence in sequences)
    # ... in one and the same order ...
    assert sequences[0] == sequences[1] == sequences[2]
    # ... which keeps each publisher's own order: its counters strictly increase.
    for publisher in range(publishers):
        prefix = f"t{publisher}-"
        counters = [int(s[0][len(prefix):].split(":")[0])
                    for s in sequences[0] if s[0].startswith(prefix)]
        assert counters == sorted(set(counters))
        assert len(counters) == per_publisher
    # The last delivery is the broadcaster's final state.
    assert sequences[0][-1] == broadcaster.state.instances


def test_a_publish_waits_for_the_delivery_in_progress(no_thread_leaks: None) -> None:
    # Deterministic twin of the stress test above: while one delivery is blocked in a
    # subscriber, a second publisher must not overtake it.
    broadcaster = Broadcaster()
    entered, proceed = threading.Event(), threading.Event()

    def gate(event: Event) -> None:
        if event.instances == ("a:1",):
            entered.set()
            assert proceed.wait(5)

    after = Recorder()
    broadcaster.subscribe(gate)
    broadcaster.subscribe(after)
    first = threading.Thread(target=broadcaster.publish, args=(Event(("a:1",)),))
    second = threading.Thread(target=broadcaster.publish, args=(Event(("b:1",)),))
    first.start()
    assert entered.wait(5)
    second.start()
    second.join(0.1)  # give an unguarded publish the chance to overtake
    assert second.is_alive()
    proceed.set()
    first.join()
    second.join()
    assert after.instances == [(), ("a:1",), ("b:1",)]
    assert broadcaster.state.instances == ("b:1",)


def test_subscribe_during_concurrent_publishing_sees_a_consistent_suffix(
    no_thread_leaks: None,
) -> None:
    broadcaster = Broadcaster()
    total = 500
    done = threading.Event()

    def publish() -> None:
        for counter in range(total):
            broadcaster.publish(Event((f"h{counter:05d}:1",)))
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    late = Recorder()
    broadcaster.subscribe(late)
    thread.join()
    assert done.is_set()
    seen = late.instances
    counters = [int(instances[0][1:6]) for instances in seen if instances]
    # The replay and everything after it: strictly increasing, ending at the final state.
    assert counters == sorted(set(counters))
    assert seen[-1] == broadcaster.state.instances


# --- InstancerHandle ---------------------------------------------------------------------


def test_handle_subscribe_replays_and_follows_changes() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    handle = InstancerHandle(broadcaster)
    recorder = Recorder()
    handle.subscribe(recorder)
    broadcaster.publish(Event(("a:1", "b:1")))
    assert recorder.instances == [("a:1",), ("a:1", "b:1")]
    assert handle.state == broadcaster.state


def test_handle_unsubscribe() -> None:
    broadcaster = Broadcaster()
    handle = InstancerHandle(broadcaster)
    recorder = Recorder()
    handle.subscribe(recorder)
    handle.unsubscribe(recorder)
    handle.unsubscribe(recorder)  # unknown now: ignored
    broadcaster.publish(Event(("a:1",)))
    assert recorder.instances == [()]


def test_stop_is_idempotent_and_releases_once() -> None:
    releases: list[int] = []
    handle = InstancerHandle(Broadcaster(), lambda: releases.append(1))
    handle.stop()
    handle.stop()
    assert releases == [1]


def test_stop_unsubscribes_only_that_handles_callbacks() -> None:
    broadcaster = Broadcaster()
    first, second = InstancerHandle(broadcaster), InstancerHandle(broadcaster)
    mine, theirs, shared = Recorder(), Recorder(), Recorder()
    first.subscribe(mine)
    first.subscribe(shared)
    second.subscribe(theirs)
    second.subscribe(shared)
    first.stop()
    broadcaster.publish(Event(("a:1",)))
    assert mine.instances == [()]
    assert theirs.instances == [(), ("a:1",)]
    # ``shared`` was subscribed through both handles: it keeps second's registration only.
    assert shared.instances == [(), (), ("a:1",)]


def test_subscribe_after_stop_raises_runtime_error() -> None:
    handle = InstancerHandle(Broadcaster())
    handle.stop()
    with pytest.raises(RuntimeError):
        handle.subscribe(Recorder())


def test_handle_as_context_manager_stops_on_exit() -> None:
    releases: list[int] = []
    broadcaster = Broadcaster()
    recorder = Recorder()
    with InstancerHandle(broadcaster, lambda: releases.append(1)) as handle:
        handle.subscribe(recorder)
    assert releases == [1]
    broadcaster.publish(Event(("a:1",)))
    assert recorder.instances == [()]
    with pytest.raises(RuntimeError):
        handle.subscribe(recorder)


def test_handles_satisfy_the_instancer_protocol() -> None:
    assert isinstance(InstancerHandle(Broadcaster()), Instancer)
    assert isinstance(FixedInstancer(["a:1"]), Instancer)


def test_stop_from_another_thread_waits_for_an_inflight_delivery(no_thread_leaks: None) -> None:
    broadcaster = Broadcaster()
    handle = InstancerHandle(broadcaster)
    entered, proceed, stopped = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def blocking(event: Event) -> None:
        if event.instances == ("a:1",):
            entered.set()
            assert proceed.wait(5)
            order.append("delivery done")

    def stop() -> None:
        handle.stop()
        order.append("stop returned")
        stopped.set()

    handle.subscribe(blocking)
    publisher = threading.Thread(target=broadcaster.publish, args=(Event(("a:1",)),))
    publisher.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=stop)
    stopper.start()
    # stop() must not return while the delivery is still running ...
    assert not stopped.wait(0.1)
    proceed.set()
    publisher.join()
    stopper.join()
    # ... and once it has returned, nothing more is delivered.
    broadcaster.publish(Event(("b:1",)))
    assert order == ["delivery done", "stop returned"]


# --- FixedInstancer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "host", "host:0", "host:65536", "host:abc", "::1:80", "a b:80"]
)
def test_fixed_instancer_rejects_invalid_instances_naming_them(bad: str) -> None:
    # (named by the redaction rule: "host:abc" shows as 'host:***', issue 16.5)
    with pytest.raises(ValueError, match=re.escape(shown_address(bad))) as excinfo:
        FixedInstancer(["good:1", bad])
    assert isinstance(excinfo.value, InvalidInstanceError)


def test_fixed_instancer_rejects_a_single_string() -> None:
    with pytest.raises(TypeError):
        FixedInstancer("host:80")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["[0:0::1]:80"], ["[::1]:80"]),
        (["HOST:80"], ["host:80"]),
        (["Web.Example:443", "web.example:443"], ["web.example:443"]),
    ],
)
def test_fixed_instancer_normalises(raw: list[str], expected: list[str]) -> None:
    recorder = Recorder()
    FixedInstancer(raw).subscribe(recorder)
    assert recorder.instances == [tuple(expected)]


def test_fixed_instancer_sorts_and_deduplicates() -> None:
    raw = ["c:3", "a:1", "b:2", "a:1"]
    instancer = FixedInstancer(raw)
    recorder = Recorder()
    instancer.subscribe(recorder)
    expected = tuple(sorted({normalize_instance(value) for value in raw}))
    assert recorder.events == [Event(expected)]
    assert repr(instancer) == f"FixedInstancer({list(expected)!r})"


def test_fixed_instancer_of_nothing_sends_an_empty_event() -> None:
    recorder = Recorder()
    FixedInstancer([]).subscribe(recorder)
    assert recorder.events == [Event()]


def test_fixed_instancer_replays_to_every_subscriber_and_stops() -> None:
    first, second = Recorder(), Recorder()
    with FixedInstancer(["a:1"]) as instancer:
        instancer.subscribe(first)
        instancer.subscribe(second)
    assert first.events == second.events == [Event(("a:1",))]
    with pytest.raises(RuntimeError):
        instancer.subscribe(Recorder())


# --- SharedWatches -----------------------------------------------------------------------


def test_shared_watches_start_one_watch_per_key() -> None:
    watches, start = SharedWatches(), WatchStarter()
    first = watches.handle("svc", start)
    second = watches.handle("svc", start)
    other = watches.handle("other", start)
    assert len(start.watches) == 2
    assert sorted(map(str, watches.keys())) == ["other", "svc"]
    # Handles of one key share the watch's broadcaster.
    start.watches[0].broadcaster.publish(Event(("a:1",)))
    assert first.state == second.state == Event(("a:1",))
    assert other.state == Event()


def test_shared_watch_stops_when_the_last_handle_stops() -> None:
    watches, start = SharedWatches(), WatchStarter()
    first = watches.handle("svc", start)
    second = watches.handle("svc", start)
    (watch,) = start.watches
    first.stop()
    first.stop()  # idempotent: must not count as the second handle's release
    assert watch.stops == 0
    assert watches.keys() == ["svc"]
    second.stop()
    assert watch.stops == 1
    assert watches.keys() == []
    second.stop()
    assert watch.stops == 1


def test_a_new_handle_after_the_last_stop_starts_a_new_watch() -> None:
    watches, start = SharedWatches(), WatchStarter()
    watches.handle("svc", start).stop()
    handle = watches.handle("svc", start)
    assert len(start.watches) == 2
    assert start.watches[0].stops == 1
    assert start.watches[1].stops == 0
    handle.stop()
    assert start.watches[1].stops == 1


def test_stopping_one_handle_keeps_the_others_subscribers() -> None:
    watches, start = SharedWatches(), WatchStarter()
    first = watches.handle("svc", start)
    second = watches.handle("svc", start)
    mine, theirs = Recorder(), Recorder()
    first.subscribe(mine)
    second.subscribe(theirs)
    first.stop()
    start.watches[0].broadcaster.publish(Event(("a:1",)))
    assert mine.instances == [()]
    assert theirs.instances == [(), ("a:1",)]


class _EveryoneEqual:
    """A client type that compares equal to anything (a dataclass of settings would)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def test_a_watch_is_shared_only_by_handles_of_the_same_owner() -> None:
    """Item 1: keys held id(client): a freed client's id can be taken by the next one.
    Owners are compared by identity (never ==) and held while the watch runs."""
    watches, start = SharedWatches(), WatchStarter()
    one, two = _EveryoneEqual(), _EveryoneEqual()
    first = watches.acquire("svc", start, owner=one)
    again = watches.acquire("svc", start, owner=one)
    other = watches.acquire("svc", start, owner=two)
    unowned = watches.acquire("svc", start)
    assert len(start.watches) == 3
    assert first[0] is again[0]
    assert other[0] is not first[0]
    assert unowned[0] is not first[0]
    assert watches.keys() == ["svc", "svc", "svc"]
    # the entry holds its owner: while the watch runs, nothing else can take its identity
    alive = weakref.ref(two)
    del two
    gc.collect()
    assert alive() is not None
    other[2]()
    del other  # (its release closure names the entry)
    gc.collect()
    assert alive() is None
    for share in (first, again, unowned):
        share[2]()
    assert [watch.stops for watch in start.watches] == [1, 1, 1]
    assert watches.keys() == []


def test_shared_watches_are_thread_safe(no_thread_leaks: None) -> None:
    watches, start = SharedWatches(), WatchStarter()
    keys: list[Hashable] = ["a", "b", ("c", 1)]
    barrier = threading.Barrier(6)

    def churn() -> None:
        barrier.wait()
        for _ in range(100):
            for key in keys:
                watches.handle(key, start).stop()

    keeper = {key: watches.handle(key, start) for key in keys}
    threads = [threading.Thread(target=churn) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The keeper handles held every watch open: exactly one start per key, none stopped.
    assert len(start.watches) == len(keys)
    assert all(watch.stops == 0 for watch in start.watches)
    for handle in keeper.values():
        handle.stop()
    assert all(watch.stops == 1 for watch in start.watches)
    assert watches.keys() == []


def test_a_stop_racing_a_subscribe_leaves_nothing_subscribed() -> None:
    """stop() on another thread between the handle's bookkeeping and the broadcaster's."""
    entered, stopped = threading.Event(), threading.Event()

    class SlowBroadcaster(Broadcaster):
        def subscribe(self, callback: Callback) -> None:
            entered.set()
            assert stopped.wait(5)  # stop() runs to completion right here
            super().subscribe(callback)

    broadcaster = SlowBroadcaster(Event(("10.0.0.1:80",)))
    handle = InstancerHandle(broadcaster)
    seen: list[Event] = []

    def stop_when_entered() -> None:
        assert entered.wait(5)
        handle.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_when_entered)
    stopper.start()
    handle.subscribe(seen.append)
    stopper.join(5)
    broadcaster.publish(Event(("10.0.0.2:80",)))
    assert seen == [Event(("10.0.0.1:80",))]  # the replay only: nothing after stop()


def test_driver_plumbing_is_not_advertised_as_public_api() -> None:
    # Issue 6.9: Broadcaster and InstancerHandle are for drivers, imported from sd.instancer.
    from kitsd import sd
    from kitsd.sd import instancer
    for name in ("Broadcaster", "InstancerHandle", "SharedWatches"):
        assert name not in sd.__all__
        assert name in instancer.__all__
    # Still reachable as sd.X for code written against earlier versions.
    assert sd.Broadcaster is instancer.Broadcaster
    assert sd.InstancerHandle is instancer.InstancerHandle
    with pytest.raises(AttributeError):
        _ = sd.SharedWatches


class NoWalkTuple(tuple[str, ...]):
    """A snapshot that fails the test if anything iterates or compares it whole."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the whole snapshot was walked")

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the whole snapshot was compared")

    def __ne__(self, other: object) -> bool:
        raise AssertionError("the whole snapshot was compared")

    __hash__ = tuple.__hash__


def test_full_snapshots_reach_subscribers_with_a_delta() -> None:
    broadcaster = Broadcaster(Event(("b:1", "a:1")))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    start = broadcaster.state.instances
    assert start == ("a:1", "b:1")
    assert broadcaster.publish(Event(("c:1", "a:1", "c:1")))  # unsorted, duplicated
    event = recorder.events[-1]
    assert event.instances == ("a:1", "c:1")
    assert event.delta is not None
    assert event.delta.base is start
    assert (event.delta.added, event.delta.removed) == (("c:1",), ("b:1",))
    # The same set again, in another order: nothing to send.
    assert not broadcaster.publish(Event(("c:1", "a:1")))
    # An error keeps the very same instance tuple.
    assert broadcaster.publish_error(RuntimeError("down"))
    assert recorder.events[-1].instances is event.instances


def test_a_publisher_delta_is_used_without_walking_the_snapshot() -> None:
    broadcaster = Broadcaster(Event(("a:1", "c:1")))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    base = broadcaster.state.instances
    snapshot = NoWalkTuple(("a:1", "b:1", "c:1"))
    assert broadcaster.publish(Event(snapshot, delta=Delta(base, ("b:1",))))
    assert recorder.events[-1].instances is snapshot
    assert broadcaster.state.instances is snapshot
    # The broadcaster's members followed the delta, so the next one is plausible too
    # (were it not, the broadcaster would compare whole snapshots and trip the spy).
    after = NoWalkTuple(("a:1", "c:1"))
    assert broadcaster.publish(Event(after, delta=Delta(snapshot, (), ("b:1",))))
    assert recorder.events[-1].instances is after
    assert len(recorder.events) == 3


@pytest.mark.parametrize(
    "delta",
    [
        Delta(("x:1",), ("b:1",)),  # relative to another snapshot
        Delta((), ("b:1",)),  # another (empty) snapshot
    ],
)
def test_a_delta_relative_to_another_snapshot_is_ignored(delta: Delta) -> None:
    broadcaster = Broadcaster(Event(("a:1", "c:1")))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert broadcaster.publish(Event(("a:1", "b:1", "c:1"), delta=delta))
    event = recorder.events[-1]
    assert event.instances == ("a:1", "b:1", "c:1")
    assert event.delta is not None
    assert (event.delta.added, event.delta.removed) == (("b:1",), ())


def test_an_implausible_delta_falls_back_to_comparing_snapshots() -> None:
    broadcaster = Broadcaster(Event(("a:1", "c:1")))
    base = broadcaster.state.instances
    # Claims b was added, but b is not in the snapshot and c left: the lengths disagree.
    assert broadcaster.publish(Event(("a:1",), delta=Delta(base, ("b:1",))))
    assert broadcaster.state.instances == ("a:1",)
    # Claims a was added although it is already a member.
    base = broadcaster.state.instances
    assert broadcaster.publish(Event(("a:1", "d:1"), delta=Delta(base, ("a:1",))))
    assert list(broadcaster.state.instances) == ["a:1", "d:1"]


def test_an_empty_delta_with_the_same_error_is_not_news() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    base = broadcaster.state.instances
    assert not broadcaster.publish(Event(("a:1",), delta=Delta(base)))
    assert broadcaster.state.instances is base


def test_apply_publishes_a_change_given_as_joins_and_leaves() -> None:
    broadcaster = Broadcaster(Event(("a:1", "c:1")))
    recorder = Recorder()
    broadcaster.subscribe(recorder)
    assert broadcaster.apply(added=["b:1"], removed=["c:1"])
    event = recorder.events[-1]
    assert event.instances == ("a:1", "b:1")
    assert event.delta is not None
    assert (event.delta.added, event.delta.removed) == (("b:1",), ("c:1",))
    # Adding a member, removing a stranger, or removing and re-adding: no news.
    assert not broadcaster.apply(added=["a:1"], removed=["z:1"])
    assert not broadcaster.apply(added=["b:1"], removed=["b:1"])
    assert len(recorder.events) == 2
    # After an error, apply() publishes a good event even without a change.
    broadcaster.publish_error(RuntimeError("down"))
    assert broadcaster.apply()
    assert recorder.events[-1] == Event(("a:1", "b:1"))
    # The members followed: a whole snapshot afterwards diffs right.
    assert broadcaster.publish(Event(("b:1",)))
    assert recorder.events[-1].delta is not None
    assert recorder.events[-1].delta.removed == ("a:1",)


# --- a watch that has not answered yet: nothing is made up (issue 15.4) ----------------------


def test_a_pending_broadcaster_sends_nothing_until_its_first_answer() -> None:
    broadcaster = Broadcaster(kind="test", service="svc", pending=True)
    seen = Recorder()
    broadcaster.subscribe(seen)
    assert not broadcaster.answered
    assert seen.events == []  # the empty starting state was never read: not sent
    broadcaster.publish(Event(("10.0.0.1:80",)))
    assert broadcaster.answered
    assert seen.events == [Event(("10.0.0.1:80",))]
    later = Recorder()
    broadcaster.subscribe(later)  # the replay is the state that was read
    assert later.events == [Event(("10.0.0.1:80",))]


def test_an_empty_first_answer_is_delivered_and_an_error_first_too() -> None:
    empty = Broadcaster(pending=True)
    seen = Recorder()
    empty.subscribe(seen)
    assert empty.publish(Event()) is True  # "no instances" is an answer, even if it equals ()
    assert seen.events == [Event()]
    assert empty.publish(Event()) is False  # and then unchanged
    failing = Broadcaster(pending=True)
    errors = Recorder()
    failing.subscribe(errors)
    boom = ConnectionError("refused")
    failing.publish_error(boom)
    assert errors.events == [Event((), boom)]
    applied = Broadcaster(pending=True)
    changes = Recorder()
    applied.subscribe(changes)
    assert applied.apply() is True  # an etcd-style empty first read
    assert changes.events == [Event()]


def test_a_pending_broadcaster_refuses_an_initial_state() -> None:
    with pytest.raises(ValueError, match="not pending"):
        Broadcaster(Event(("10.0.0.1:80",)), pending=True)


def test_the_handle_waits_for_the_first_answer_and_returns_with_it_delivered() -> None:
    broadcaster = Broadcaster(kind="test", service="svc", pending=True)
    seen = Recorder()
    broadcaster.subscribe(seen)  # a subscriber of the watch already waiting
    made: list[InstancerHandle] = []
    built = threading.Event()

    def build() -> None:
        made.append(InstancerHandle(broadcaster, first_answer_timeout=10.0))
        built.set()

    builder = threading.Thread(target=build)
    builder.start()
    assert not built.wait(0.05)  # still waiting: nothing was read yet
    broadcaster.publish(Event(("10.0.0.2:80",)))
    assert built.wait(5)
    builder.join(5)
    handle = made[0]
    assert handle.answered
    assert handle.state == Event(("10.0.0.2:80",))
    later = Recorder()
    handle.subscribe(later)
    assert later.events == seen.events == [Event(("10.0.0.2:80",))]
    handle.stop()


def test_the_handle_returns_only_once_the_first_answer_was_delivered() -> None:
    """The flag is set before the delivery runs: the wait must cover the delivery."""
    broadcaster = Broadcaster(pending=True)
    in_delivery = threading.Event()
    release = threading.Event()

    def slow(event: Event) -> None:
        in_delivery.set()
        release.wait(5)

    broadcaster.subscribe(slow)
    publisher = threading.Thread(target=broadcaster.publish, args=(Event(("10.0.0.3:80",)),))
    returned = threading.Event()
    made: list[InstancerHandle] = []

    def build() -> None:
        made.append(InstancerHandle(broadcaster, first_answer_timeout=10.0))
        returned.set()

    builder = threading.Thread(target=build)
    builder.start()
    publisher.start()
    assert in_delivery.wait(5)
    assert broadcaster.answered
    assert not returned.wait(0.1), "the constructor returned while the first delivery ran"
    release.set()
    assert returned.wait(5)
    publisher.join(5)
    builder.join(5)
    made[0].stop()


def test_a_late_first_answer_is_an_error_naming_the_source_then_the_answer() -> None:
    broadcaster = Broadcaster(kind="etcd", service="/svc/", pending=True)
    seen = Recorder()
    broadcaster.subscribe(seen)
    handle = InstancerHandle(broadcaster, first_answer_timeout=0.05,
                             source="etcd prefix '/svc/' at 127.0.0.1:1")
    assert len(seen.events) == 1  # returned after 0.05 s with the error delivered
    first = seen.events[0]
    assert first.instances == ()
    assert isinstance(first.error, RegistryUnavailableError)
    assert str(first.error) == ("no answer from etcd prefix '/svc/' at 127.0.0.1:1 within"
                                " 0.05s (still trying)")
    assert handle.state == first
    broadcaster.publish(Event(("10.0.0.4:80",)))  # the watch kept trying
    assert seen.events[-1] == Event(("10.0.0.4:80",))
    other = Recorder()
    handle.subscribe(other)
    assert other.events == [Event(("10.0.0.4:80",))]
    again = InstancerHandle(broadcaster, first_answer_timeout=10.0)  # answered: no wait
    again.stop()
    handle.stop()


def test_without_a_first_answer_timeout_subscribe_does_not_wait() -> None:
    broadcaster = Broadcaster(pending=True)
    handle = InstancerHandle(broadcaster)  # the asyncio instancers' handles
    seen = Recorder()
    handle.subscribe(seen)
    assert seen.events == []
    assert not handle.answered
    assert handle.first_answer_late(1.0) is True
    assert isinstance(seen.events[0].error, RegistryUnavailableError)
    assert handle.first_answer_late(1.0) is False  # answered now (with the error)
    handle.stop()


def test_shared_watches_make_pending_broadcasters_on_request() -> None:
    watches = SharedWatches()
    broadcaster, _, release = watches.acquire("k", FakeWatch, pending=True)
    assert not broadcaster.answered
    release()
    broadcaster, _, release = watches.acquire("k", FakeWatch)
    assert broadcaster.answered
    release()


@pytest.mark.parametrize(("value", "error"), [
    (-1, ValueError), (601, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    (None, TypeError), ("5", TypeError), (True, TypeError),
])
def test_first_answer_timeout_is_checked(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="first_answer_timeout"):
        check_first_answer_timeout(value)
    assert check_first_answer_timeout(0) is None
    assert check_first_answer_timeout(2) == 2.0
