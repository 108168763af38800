"""The ZooKeeper watch's thread against a scripted kazoo client: a request lost with
the connection it was sent on (kazoo does not always fail it) must not hold the watch
for the whole call timeout once kazoo has connected again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster
from kitsd.sd.zk.client import Reconnected, await_result
from kitsd.sd.zk.instancer import ChildrenWatch
from tests.helpers import wait_for


class Result:
    """A kazoo async result: answered when ``value`` is set, else never."""

    def __init__(self, value: Any = None, answered: bool = True) -> None:
        self._done = threading.Event()
        self._value = value
        if answered:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def get(self, timeout: float = 0) -> Any:
        return self._value


class LossyClient:
    """Children ``a`` and ``b``; the first children request is lost (never answered)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], Any]] = []
        self.children_calls = 0

    def get_children_async(self, path: str, watch: Any = None) -> Result:
        self.children_calls += 1
        if self.children_calls == 1:
            return Result(answered=False)  # sent on a connection that then went away
        return Result(["a", "b"])

    def get_async(self, path: str, watch: Any = None) -> Result:
        name = path.rpartition("/")[2]
        return Result((f"10.0.0.{ord(name) - 96}:80".encode(), None))

    def exists_async(self, path: str, watch: Any = None) -> Result:
        return Result(True)

    def add_listener(self, listener: Callable[[Any], Any]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[Any], Any]) -> None:
        self.listeners.remove(listener)

    def state(self, name: str) -> None:
        for listener in list(self.listeners):
            listener(name)


def test_a_call_lost_with_its_connection_is_abandoned_when_kazoo_reconnects() -> None:
    client = LossyClient()
    broadcaster = Broadcaster(pending=True)
    watch = ChildrenWatch(broadcaster, client, "/svc", call_timeout=30.0)
    try:
        wait_for(lambda: client.children_calls == 1, what="the first request")
        started = time.monotonic()
        client.state("SUSPENDED")
        client.state("CONNECTED")
        wait_for(lambda: broadcaster.state == Event(("10.0.0.1:80", "10.0.0.2:80")),
                 what="the sync on the new connection")
        assert time.monotonic() - started < 5.0  # not the 30 s call timeout
        assert client.children_calls == 2
    finally:
        watch.stop()


def test_the_first_connection_does_not_abandon_a_queued_call() -> None:
    """Calls made while a new client connects are queued and sent on its first
    connection: CONNECTED without a loss before it abandons nothing."""
    stopping = threading.Event()
    reconnected = threading.Event()
    assert await_result(Result("ok"), timeout=1, stopping=stopping,
                        reconnected=reconnected) == "ok"
    reconnected.set()
    try:
        await_result(Result(answered=False), timeout=5, stopping=stopping,
                     reconnected=reconnected)
    except Reconnected:
        pass
    else:
        raise AssertionError("a reconnection must end the wait")
    client = LossyClient()
    client.children_calls = 1  # every request answered
    broadcaster = Broadcaster(pending=True)
    watch = ChildrenWatch(broadcaster, client, "/svc")
    try:
        client.state("CONNECTED")
        wait_for(lambda: broadcaster.answered, what="the first answer")
        assert client.children_calls == 2  # one request, not abandoned and asked again
    finally:
        watch.stop()
