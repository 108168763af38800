"""Registry watches labelled by whoever starts them (kitsd.core.observe.WatchLabel):
a name that came from a request is no discovery label until it is vouched for, and a
watch that stops is announced, so the metric adapters can forget it."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd import sd
from kitsd.core.observe import (
    DiscoveryStopped,
    DiscoveryUpdated,
    WatchLabel,
    current_watch_label,
    labelling_watches,
    observing,
)
from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster, SharedWatches


class Heard:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, observation: Any) -> None:
        if isinstance(observation, DiscoveryUpdated | DiscoveryStopped):
            self.seen.append(observation)


def test_a_watch_started_under_a_label_is_named_by_it_and_renamed_with_it() -> None:
    heard = Heard()
    label = WatchLabel("other")
    with observing(heard):
        with labelling_watches(label):
            assert current_watch_label() is label
            broadcaster = Broadcaster(kind="etcd", service="evil.example", pending=True)
        assert current_watch_label() is None
        broadcaster.publish(Event(("10.0.0.1:80",)))
        label.rename("users")  # vouched for: the current state is announced again
        broadcaster.publish(Event(("10.0.0.1:80", "10.0.0.2:80")))
        broadcaster.stopped()
    watch = broadcaster.watch
    assert heard.seen == [
        DiscoveryUpdated("etcd", "other", 1, watch),
        DiscoveryUpdated("etcd", "users", 1, watch),
        DiscoveryUpdated("etcd", "users", 2, watch),
        DiscoveryStopped("etcd", "users", watch),
    ]
    assert all("evil" not in repr(each) for each in heard.seen)


def test_without_a_label_a_watch_is_named_by_its_service() -> None:
    heard = Heard()
    with observing(heard):
        broadcaster = Broadcaster(kind="consul", service="users", pending=True)
        broadcaster.publish(Event(()))
    assert heard.seen == [DiscoveryUpdated("consul", "users", 0, broadcaster.watch)]


def test_watch_numbers_tell_watches_apart() -> None:
    first, second = Broadcaster(), Broadcaster()
    assert first.watch != second.watch
    assert first.watch > 0


def test_the_last_release_of_a_shared_watch_announces_it_stopped() -> None:
    heard = Heard()
    watches = SharedWatches()
    stopped: list[bool] = []

    class Watch:
        def __init__(self, broadcaster: Broadcaster) -> None:
            broadcaster.publish(Event(("10.0.0.1:80",)))

        def stop(self) -> None:
            stopped.append(True)

    with observing(heard):
        broadcaster, _, release_one = watches.acquire("k", Watch, kind="zk", service="users",
                                                      pending=True)
        _, _, release_two = watches.acquire("k", Watch, kind="zk", service="users")
        release_one()
        assert not any(isinstance(each, DiscoveryStopped) for each in heard.seen)
        release_two()
    assert stopped == [True]
    assert heard.seen[-1] == DiscoveryStopped("zk", "users", broadcaster.watch)


def test_a_memory_registry_announces_a_service_nobody_watches_any_more() -> None:
    heard = Heard()
    registry = sd.MemoryRegistry()
    with observing(heard):
        instancer = registry.instancer("users")
        registry.registrar("users", "10.0.0.1:80").register()
        instancer.stop()
    assert [type(each) for each in heard.seen] == [DiscoveryUpdated, DiscoveryStopped]


def test_a_label_is_a_str() -> None:
    with pytest.raises(TypeError, match="str"):
        WatchLabel(None)  # type: ignore[arg-type]
