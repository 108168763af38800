"""The Endpointer's closer thread: started only for endpoints with something to close,
reused across a burst of removals, gone after close()/aclose()."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster, InstancerHandle
from tests.helpers import wait_for


class Closing:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.closed_on: list[threading.Thread] = []

    def __call__(self, request: Any) -> Any:
        return request

    def close(self) -> None:
        self.closed_on.append(threading.current_thread())


def closers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name == "kitsd-endpoint-closer"]


def test_endpoints_without_a_close_start_no_thread(no_thread_leaks: None) -> None:
    broadcaster = Broadcaster(Event(("a:1", "b:1")))
    with Endpointer(InstancerHandle(broadcaster), lambda instance: (lambda request: request)):
        assert closers() == []
        broadcaster.publish(Event(("a:1",)))
        broadcaster.publish(Event(()))
        assert closers() == []


def test_a_burst_of_removals_is_closed_on_one_thread(no_thread_leaks: None) -> None:
    made: dict[str, Closing] = {}

    def factory(instance: str) -> Closing:
        made[instance] = Closing(instance)
        return made[instance]

    broadcaster = Broadcaster(Event(("a:1", "b:1", "c:1")))
    endpointer = Endpointer(InstancerHandle(broadcaster), factory)
    broadcaster.publish(Event(("b:1", "c:1")))
    wait_for(lambda: made["a:1"].closed_on != [], what="a:1 closed")
    broadcaster.publish(Event(("c:1",)))  # the closer is idle now: it lingers, not restarts
    wait_for(lambda: made["b:1"].closed_on != [], what="b:1 closed")
    [first], [second] = made["a:1"].closed_on, made["b:1"].closed_on
    assert first is second
    assert first is not threading.current_thread()
    endpointer.close()  # ends the lingering thread at once
    assert closers() == []
    assert made["c:1"].closed_on == [threading.current_thread()]


def test_aclose_on_a_loop_ends_the_lingering_thread(no_thread_leaks: None) -> None:
    async def main() -> None:
        made: list[Closing] = []

        def factory(instance: str) -> Closing:
            made.append(Closing(instance))
            return made[-1]

        broadcaster = Broadcaster(Event(("a:1", "b:1")))
        endpointer = Endpointer(InstancerHandle(broadcaster), factory)
        broadcaster.publish(Event(("b:1",)))
        await endpointer.aclose()
        assert [len(endpoint.closed_on) for endpoint in made] == [1, 1]

    asyncio.run(main())
    # no_thread_leaks allows a few seconds for the thread to end, LINGER is 2 s: check
    # it ends well before that.
    wait_for(lambda: closers() == [], timeout=1.0, what="the closer thread to end")
