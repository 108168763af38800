"""The watch against a scripted API server (httpx.MockTransport): the answers a real
server gives only rarely, on cue -- an HTTP 410 on a watch, an expired continue token,
a broken stream, a line that is not an event, a 401 that a fresh token cures, a
server that ends every watch at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kitsd import sd
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.k8s import (
    AsyncEndpointSliceInstancer,
    ClusterConfig,
    EndpointSliceInstancer,
    StaticToken,
    TokenFile,
)
from tests.helpers import async_wait_for, wait_for


def slice_object(name: str, rv: str, *addresses: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


class Script:
    """A scripted API server: lists answer from ``lists``; each watch request takes the
    next queue from ``watches`` (bytes chunks, ``None`` ends the stream, an exception
    is raised into the client) or the next ``httpx.Response``."""

    def __init__(self) -> None:
        self.lists: list[Callable[[httpx.Request], httpx.Response]] = []
        self.watches: list[asyncio.Queue[bytes | Exception | None] | httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def list_answer(self, rv: str, *items: dict[str, Any], cont: str | None = None,
                    status: int = 200) -> None:
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            metadata["continue"] = cont
        body = {"metadata": metadata, "items": list(items)} if status == 200 else \
            {"kind": "Status", "code": status, "message": f"scripted {status}"}
        self.lists.append(lambda request: httpx.Response(status, json=body))

    def watch_stream(self) -> asyncio.Queue[bytes | Exception | None]:
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        self.watches.append(queue)
        return queue

    def watch_answer(self, response: httpx.Response) -> None:
        self.watches.append(response)

    def of(self, kind: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if (r.url.params.get("watch") == "true") == (kind == "watch")]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.params.get("watch") != "true":
            if not self.lists:
                return httpx.Response(503, json={"message": "no more lists scripted"})
            return self.lists.pop(0)(request)
        if not self.watches:
            await asyncio.sleep(3600)  # hold it, like a quiet watch
        script = self.watches.pop(0)
        if isinstance(script, httpx.Response):
            return script

        async def stream() -> AsyncIterator[bytes]:
            while True:
                item = await script.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item

        return httpx.Response(200, stream=_Stream(stream()))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk


CONFIG = ClusterConfig(server="https://k8s.test:6443", token=StaticToken("t0ken"))


async def start(script: Script, config: ClusterConfig = CONFIG,
                **kwargs: Any) -> tuple[AsyncEndpointSliceInstancer, list[sd.Event]]:
    instancer = AsyncEndpointSliceInstancer("web", namespace="shop", config=config,
                                            transport=httpx.MockTransport(script.handler),
                                            **kwargs)
    events: list[sd.Event] = []
    instancer.subscribe(events.append)
    async with asyncio.timeout(5):
        await instancer.wait_answered()
    return instancer, events


async def test_events_apply_and_a_bookmark_moves_the_resume_point() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    first = script.watch_stream()
    second = script.watch_stream()
    instancer, events = await start(script)
    async with instancer:
        assert events[-1] == sd.Event(("10.0.0.1:80",))
        first.put_nowait(line("ADDED", slice_object("web-2", "11", "10.0.0.2")))
        await async_wait_for(lambda: len(events[-1].instances) == 2, 5, "the added slice")
        # two events in one chunk: one snapshot
        first.put_nowait(line("MODIFIED", slice_object("web-1", "12", "10.0.0.3"))
                         + line("DELETED", slice_object("web-2", "13")))
        await async_wait_for(lambda: events[-1].instances == ("10.0.0.3:80",), 5, "the batch")
        assert [e.instances for e in events].count(("10.0.0.3:80",)) == 1
        assert ("10.0.0.2:80", "10.0.0.3:80") not in [e.instances for e in events]
        first.put_nowait(line("BOOKMARK", {"metadata": {"resourceVersion": "99"}}))
        first.put_nowait(None)  # the server ends the watch (its timeout)
        await async_wait_for(lambda: len(script.of("watch")) == 2, 5, "a new watch")
        assert script.of("watch")[1].url.params["resourceVersion"] == "99"
        assert instancer.stats.bookmarks == 1
        assert len(script.of("list")) == 1
        second.put_nowait(None)


async def test_http_410_on_a_watch_lists_again_and_diffs() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"),
                       slice_object("web-2", "9", "10.0.0.2"))
    script.watch_answer(httpx.Response(410, json={"kind": "Status", "code": 410,
                                                  "message": "too old resource version"}))
    script.list_answer("50", slice_object("web-2", "40", "10.0.0.2"),
                       slice_object("web-3", "41", "10.0.0.3"))
    instancer, events = await start(script)
    async with instancer:
        await async_wait_for(lambda: events[-1].instances == ("10.0.0.2:80", "10.0.0.3:80"),
                             5, "the fresh list")
        assert instancer.stats.relists == 1
        assert all(e.error is None for e in events)
        await async_wait_for(lambda: len(script.of("watch")) == 2, 5, "the next watch")
        assert script.of("watch")[1].url.params["resourceVersion"] == "50"


async def test_410_as_the_first_event_of_a_resumed_watch_never_clears_the_error() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    script.watch_answer(httpx.Response(503, json={"message": "restarting"}))
    resumed = script.watch_stream()
    script.list_answer("20", slice_object("web-9", "19", "10.0.0.9"))
    instancer, events = await start(script)
    async with instancer:
        await async_wait_for(lambda: events[-1].error is not None, 5, "the error")
        await async_wait_for(lambda: len(script.of("watch")) == 2, 5, "the resumed watch")
        resumed.put_nowait(line("ERROR", {"kind": "Status", "code": 410,
                                          "message": "too old resource version: 10 (15)"}))
        await async_wait_for(lambda: events[-1].instances == ("10.0.0.9:80",), 5, "the list")
        stale = [e for e in events if e.instances == ("10.0.0.1:80",) and e.error is None]
        assert len(stale) == 1  # only the first, before the failure


async def test_an_expired_continue_token_starts_the_list_over() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"), cont="page2")
    script.list_answer("", status=410)  # the continue token expired
    script.list_answer("20", slice_object("web-1", "9", "10.0.0.1"), cont="page2b")
    script.list_answer("", slice_object("web-2", "19", "10.0.0.2"))
    instancer, events = await start(script)
    async with instancer:
        assert events[-1] == sd.Event(("10.0.0.1:80", "10.0.0.2:80"))
        lists = script.of("list")
        assert [r.url.params.get("continue") for r in lists] == [None, "page2", None, "page2b"]
        assert instancer.stats.lists == 1


async def test_a_broken_stream_resumes_from_the_last_version_without_listing() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    broken = script.watch_stream()
    script.watch_stream()
    instancer, events = await start(script)
    async with instancer:
        broken.put_nowait(line("ADDED", slice_object("web-2", "14", "10.0.0.2")))
        await async_wait_for(lambda: len(events[-1].instances) == 2, 5, "the slice")
        broken.put_nowait(httpx.ReadError("connection reset by peer"))
        await async_wait_for(lambda: events[-1].error is not None, 5, "the error event")
        assert isinstance(events[-1].error, RegistryUnavailableError)
        assert events[-1].instances == ("10.0.0.1:80", "10.0.0.2:80")  # kept
        await async_wait_for(lambda: len(script.of("watch")) == 2, 5, "the resumed watch")
        assert script.of("watch")[1].url.params["resourceVersion"] == "14"
        await async_wait_for(lambda: events[-1].error is None, 5, "the error cleared")
        assert len(script.of("list")) == 1


async def test_a_line_that_is_not_an_event_is_an_error_then_resumes() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    junk = script.watch_stream()
    script.watch_stream()
    instancer, events = await start(script)
    async with instancer:
        junk.put_nowait(b"<html>proxy error</html>\n")
        await async_wait_for(lambda: events[-1].error is not None, 5, "the error event")
        assert "not a watch event" in str(events[-1].error)
        await async_wait_for(lambda: len(script.of("watch")) == 2, 5, "the resumed watch")


async def test_a_401_is_retried_once_with_a_fresh_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    seen: list[str] = []
    script = Script()

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old":
            token.write_text("new!")  # rotated meanwhile (same size and time would not do)
            return httpx.Response(401, json={"message": "Unauthorized"})
        return httpx.Response(200, json={"metadata": {"resourceVersion": "5"}, "items": [
            slice_object("web-1", "4", "10.0.0.1")]})

    script.lists += [answer, answer]  # the first request and its retry
    config = ClusterConfig(server="https://k8s.test:6443", token=TokenFile(token))
    instancer, events = await start(script, config)
    async with instancer:
        assert events[-1] == sd.Event(("10.0.0.1:80",))
        assert seen == ["Bearer old", "Bearer new!"]


async def test_a_server_that_ends_every_watch_at_once_gets_no_hot_loop() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    for _ in range(100):
        script.watch_answer(httpx.Response(200, content=b""))
    instancer, _events = await start(script)
    async with instancer:
        await asyncio.sleep(1.0)
        # backoff from 0.2 s doubling: a handful of watches in a second, not hundreds
        assert 2 <= len(script.of("watch")) <= 6, len(script.of("watch"))


async def test_stop_is_prompt_during_a_backoff_and_a_held_watch() -> None:
    script = Script()
    script.list_answer("10", status=503)
    instancer, events = await start(script)
    assert events[-1].error is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    await instancer.aclose()
    assert loop.time() - started < 0.5
    script = Script()
    script.list_answer("10")
    instancer, _ = await start(script)  # then a watch held open by the server
    await async_wait_for(lambda: len(script.of("watch")) == 1, 5, "the watch")
    started = loop.time()
    await instancer.aclose()
    assert loop.time() - started < 0.5


async def test_an_ambiguous_port_is_an_error_event_and_clears_when_named() -> None:
    script = Script()
    two_ports = slice_object("web-1", "9", "10.0.0.1")
    two_ports["ports"] = [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}]
    script.list_answer("10", two_ports)
    stream = script.watch_stream()
    instancer, events = await start(script)
    async with instancer:
        assert events[-1].instances == ()
        assert "2 ports (http, grpc): name one" in str(events[-1].error)
        one_port = slice_object("web-1", "11", "10.0.0.1")
        stream.put_nowait(line("MODIFIED", one_port))
        await async_wait_for(lambda: events[-1] == sd.Event(("10.0.0.1:80",)), 5, "cleared")


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500])
async def test_refusals_arrive_as_error_events(status: int) -> None:
    script = Script()
    script.list_answer("1", status=status)
    instancer, events = await start(script)
    async with instancer:
        assert events[-1].error is not None
        assert f"{status}" in str(events[-1].error)
        assert "t0ken" not in str(events[-1].error)


class _Gate:
    """The API server of ``script`` with its list answers held until :meth:`open`
    (called from any thread)."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._opened = threading.Event()
        self.held = 0  # list requests that reached the server

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch") != "true":
            self.held += 1
            # opened from another thread (an asyncio.Event is not thread-safe): poll
            while not self._opened.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        return await self._script.handler(request)

    def open(self) -> None:
        self._opened.set()


def test_sync_instancer_late_first_list_is_an_error_then_the_list() -> None:
    """Item 2 (15.4 for k8s): a first list later than first_answer_timeout gave
    subscribers an empty set nobody read (no error); now an error saying so, then the list."""
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    script.watch_stream()
    gate = _Gate(script)
    started = time.monotonic()
    with EndpointSliceInstancer("web", namespace="shop", config=CONFIG, first_answer_timeout=0.2,
                                transport=httpx.MockTransport(gate.handler)) as instancer:
        assert time.monotonic() - started >= 0.2
        events: list[sd.Event] = []
        instancer.subscribe(events.append)
        assert len(events) == 1
        assert events[0].instances == ()
        assert isinstance(events[0].error, RegistryUnavailableError)
        assert "no answer from kube-apiserver https://k8s.test:6443 (shop/web) within 0.2s " \
               "(still trying)" in str(events[0].error)
        gate.open()
        wait_for(lambda: events[-1] == sd.Event(("10.0.0.1:80",)), 5, "the first list")


def test_sync_instancer_waits_for_an_empty_first_list() -> None:
    """A Service with no slices answers an empty list: that is the first answer (the
    constructor does not wait out its timeout for it)."""
    script = Script()
    script.list_answer("10")
    script.watch_stream()
    started = time.monotonic()
    with EndpointSliceInstancer("web", namespace="shop", config=CONFIG, first_answer_timeout=30,
                                transport=httpx.MockTransport(script.handler)) as instancer:
        assert time.monotonic() - started < 10
        assert instancer.answered
        assert instancer.state == sd.Event()


async def test_async_instancer_sends_nothing_before_the_first_list() -> None:
    """The asyncio instancer handed new subscribers an empty Event() nobody read."""
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    script.watch_stream()
    gate = _Gate(script)
    async with AsyncEndpointSliceInstancer(
            "web", namespace="shop", config=CONFIG, first_answer_timeout=0,
            transport=httpx.MockTransport(gate.handler)) as instancer:
        events: list[sd.Event] = []
        instancer.subscribe(events.append)
        await async_wait_for(lambda: gate.held == 1, 5, "the list request")
        assert events == []
        assert not instancer.answered
        gate.open()
        async with asyncio.timeout(5):
            await instancer.wait_answered()
        assert events == [sd.Event(("10.0.0.1:80",))]


async def test_async_instancer_late_first_list_is_an_error_then_the_list() -> None:
    script = Script()
    script.list_answer("10", slice_object("web-1", "9", "10.0.0.1"))
    script.watch_stream()
    gate = _Gate(script)
    async with AsyncEndpointSliceInstancer(
            "web", namespace="shop", config=CONFIG, first_answer_timeout=0.1,
            transport=httpx.MockTransport(gate.handler)) as instancer:
        events: list[sd.Event] = []
        instancer.subscribe(events.append)
        await async_wait_for(lambda: bool(events), 5, "the late-answer error")
        assert isinstance(events[0].error, RegistryUnavailableError)
        assert "within 0.1s (still trying)" in str(events[0].error)
        gate.open()
        await async_wait_for(lambda: events[-1] == sd.Event(("10.0.0.1:80",)), 5, "the list")
