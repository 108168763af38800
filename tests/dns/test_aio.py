"""asyncio: AsyncSRVInstancer (the watch coroutine on the caller's loop) and EventStream."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.dns import AsyncSRVInstancer, SRVInstancer
from tests.dns.fake_dns import ScriptedDNS, rcode_answer, srv_answer
from tests.helpers import async_wait_for

NAME = "_users._tcp.example.test"


class Script:
    def __init__(self) -> None:
        self.mode = "records"
        self.port = 8080

    def __call__(self, query: dns.message.Message) -> dns.message.Message | None:
        if self.mode == "silent":
            return None
        if self.mode == "servfail":
            return rcode_answer(query, dns.rcode.SERVFAIL)
        return srv_answer(query, [f"1 1 {self.port} a.example.test."], ttl=0,
                          additional=[("a.example.test.", "A", "10.0.0.1")])


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[ScriptedDNS]:
    with ScriptedDNS(script) as scripted:
        yield scripted


async def test_async_instancer_runs_on_the_loop_without_a_thread(
    server: ScriptedDNS, script: Script
) -> None:
    threads = set(threading.enumerate())
    tasks = asyncio.all_tasks()
    events: list[sd.Event] = []
    callers: set[threading.Thread] = set()

    def on_event(event: sd.Event) -> None:
        callers.add(threading.current_thread())
        events.append(event)

    async with AsyncSRVInstancer(NAME, resolver=server.address, min_ttl=0.1,
                                 timeout=0.5) as instancer:
        instancer.subscribe(on_event)
        await async_wait_for(lambda: bool(events) and events[-1].instances == ("10.0.0.1:8080",))
        assert instancer.records[0].weight == 1
        assert set(threading.enumerate()) == threads, "no thread of its own"
        script.mode = "servfail"
        await async_wait_for(lambda: bool(events) and events[-1].error is not None)
        assert isinstance(events[-1].error, RegistryUnavailableError)
        assert events[-1].instances == ("10.0.0.1:8080",)
        script.mode = "records"
        script.port = 9090
        # (compared field by field: the event also carries the SRV metadata)
        await async_wait_for(
            lambda: (events[-1].instances, events[-1].error) == (("10.0.0.1:9090",), None))
    assert callers == {threading.current_thread()}
    assert asyncio.all_tasks() == tasks


async def test_aclose_during_a_hanging_lookup_is_prompt(
    server: ScriptedDNS, script: Script
) -> None:
    script.mode = "silent"
    tasks = asyncio.all_tasks()
    instancer = AsyncSRVInstancer(NAME, resolver=server.address, timeout=30.0)
    await async_wait_for(lambda: len(server.queries) >= 1)
    started = time.monotonic()
    await instancer.aclose()
    await instancer.aclose()  # idempotent
    assert time.monotonic() - started < 0.5
    assert asyncio.all_tasks() == tasks


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"timeout": math.nan}, MisuseError), ({"resolver": "dns.example"}, MisuseError),
     ({"resolve": 1}, TypeError), ({"min_ttl": 0}, MisuseError)],
)
async def test_bad_arguments_start_no_task(kwargs: dict[str, object], error: type[Exception]
                                           ) -> None:
    tasks = asyncio.all_tasks()
    with pytest.raises(error):
        AsyncSRVInstancer(NAME, **kwargs)  # type: ignore[arg-type]
    assert asyncio.all_tasks() == tasks


async def test_event_stream_over_the_thread_driver(server: ScriptedDNS) -> None:
    with SRVInstancer(NAME, resolver=server.address, min_ttl=0.1, timeout=0.5) as instancer:
        async with sd.EventStream(instancer) as stream:
            async for event in stream:
                if event.instances:
                    assert event.instances == ("10.0.0.1:8080",)
                    break


async def test_the_async_instancer_sends_the_first_answer_not_an_empty_set(
    server: ScriptedDNS, script: Script
) -> None:
    events: list[sd.Event] = []
    async with AsyncSRVInstancer(NAME, resolver=server.address, min_ttl=0.1,
                                 timeout=0.5) as instancer:
        instancer.subscribe(events.append)  # before the watch task ran at all
        assert events == []  # nothing read yet: nothing sent
        await async_wait_for(lambda: bool(events))
        assert events[0].instances == ("10.0.0.1:8080",)
        assert instancer.answered


async def test_the_async_instancer_reports_a_late_first_answer(
    server: ScriptedDNS, script: Script
) -> None:
    script.mode = "silent"
    events: list[sd.Event] = []
    async with AsyncSRVInstancer(NAME, resolver=server.address, timeout=30.0,
                                 first_answer_timeout=0.05) as instancer:
        instancer.subscribe(events.append)
        await async_wait_for(lambda: bool(events))
        assert events[0].instances == ()
        assert isinstance(events[0].error, RegistryUnavailableError)
        assert "within 0.05s" in str(events[0].error)
