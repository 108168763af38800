"""sd.consul._http11.Http11Transport, the watches' HTTP/1.1 transport, against a tiny
asyncio server that answers what each test scripts (keep-alive, closes, chunks, gzip,
silence, garbage); the real agent is exercised by every other Consul test."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import selectors
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.consul import AgentSettings
from kitsd.sd.consul._http11 import Http11Transport
from kitsd.sd.consul.client import map_error, reached_agent
from kitsd.sd.consul.transport import AsyncHttpxConsul
from kitsd.sd.consul.watch import HealthQuery, run_watch
from kitsd.sd.instancer import Broadcaster

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes = b"[]", *, index: int = 7, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


class Server:
    """A loopback server running ``handler`` per connection; counts connections and
    sees them end."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.ended = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
            with contextlib.suppress(OSError):
                await reader.read()  # until the client closes
        finally:
            self.ended += 1
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def requests_of(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request's head (this server's clients send no bodies but the PUT test's)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        yield head + (await reader.readexactly(length) if length else b"")


def serving(*answers: bytes) -> Handler:
    """Answer the requests of each connection in turn with ``answers`` (the last
    one again and again)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = 0
        async for _ in requests_of(reader):
            writer.write(answers[min(number, len(answers) - 1)])
            number += 1
            await writer.drain()
    return handler


def get(port: int, path: str = "/v1/health/service/web", **timeout: float) -> httpx.Request:
    request = httpx.Request("GET", f"http://127.0.0.1:{port}{path}")
    request.extensions["timeout"] = {"connect": 5.0, "read": 5.0, "write": 5.0, **timeout}
    return request


async def test_answers_share_one_kept_alive_connection() -> None:
    async with Server(serving(answer(b'[{"a": 1}]', index=8))) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        for _ in range(3):
            response = await transport.handle_async_request(get(server.port))
            assert response.status_code == 200
            assert response.headers["x-consul-index"] == "8"  # case-insensitive, as httpx's
            assert response.json() == [{"a": 1}]
        assert server.connections == 1
        await transport.aclose()


async def test_a_connection_the_agent_closed_while_idle_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in requests_of(reader):
            writer.write(answer())
            await writer.drain()
            writer.close()  # idle timeout on the agent's side
            return

    async with Server(once) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        await transport.handle_async_request(get(server.port))
        for _ in range(50):  # the end-of-file reaches the client's loop
            if server.ended:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        response = await transport.handle_async_request(get(server.port))
        assert response.status_code == 200
        assert server.connections == 2
        await transport.aclose()


async def test_connection_close_chunked_and_gzip_answers() -> None:
    body = gzip.compress(b'[{"Service": {"Port": 1}}]')
    chunked = (b"HTTP/1.1 200 OK\r\nX-Consul-Index: 9\r\nContent-Encoding: gzip\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + f"{5:x}\r\n".encode() + body[:5] + b"\r\n"
               + f"{len(body) - 5:x}\r\n".encode() + body[5:] + b"\r\n0\r\n\r\n")
    async with Server(serving(chunked)) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        for _ in range(2):
            response = await transport.handle_async_request(get(server.port))
            assert response.json() == [{"Service": {"Port": 1}}]  # joined and decoded
        assert server.connections == 2  # the agent asked to close each
        await transport.aclose()


async def test_a_body_is_sent() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for request in requests_of(reader):
            seen.append(request)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue")
            await writer.drain()

    async with Server(record) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        request = httpx.Request("PUT", f"http://127.0.0.1:{server.port}/v1/agent/x?a=b",
                                content=b'{"k": 1}', headers={"X-Consul-Token": "t"})
        response = await transport.handle_async_request(request)
        assert response.json() is True
        assert seen[0].startswith(b"PUT /v1/agent/x?a=b HTTP/1.1\r\n")
        assert b"X-Consul-Token: t\r\n" in seen[0]
        assert seen[0].endswith(b'\r\n\r\n{"k": 1}')
        await transport.aclose()


async def test_failures_are_httpx_errors_the_watch_maps() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    transport = Http11Transport("127.0.0.1", port)
    with pytest.raises(httpx.ConnectError) as refused:
        await transport.handle_async_request(get(port))
    assert not reached_agent(refused.value)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with Server(silent) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        with pytest.raises(httpx.ReadTimeout) as timed_out:
            await transport.handle_async_request(get(server.port, read=0.05))
        assert reached_agent(timed_out.value)
        await transport.aclose()

    async with Server(serving(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        server.handler = _then_close(server.handler)
        with pytest.raises(httpx.RemoteProtocolError) as cut:
            await transport.handle_async_request(get(server.port))
        mapped = map_error(cut.value, doing="watching service 'web'", agent="a")
        assert isinstance(mapped, RegistryUnavailableError)
        await transport.aclose()

    async with Server(serving(b"SPDY/9 nonsense\r\n\r\n")) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        with pytest.raises(httpx.RemoteProtocolError):
            await transport.handle_async_request(get(server.port))
        await transport.aclose()


def _then_close(handler: Handler) -> Handler:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        await writer.drain()
        writer.close()
    return closing


async def test_a_cancelled_request_closes_its_connection_and_aclose_the_idle_ones() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for request in requests_of(reader):
            if b"held" in request:
                await reader.read()  # no answer: until the client hangs up
                return
            writer.write(answer())
            await writer.drain()

    async with Server(hold) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        await transport.handle_async_request(get(server.port))  # one idle connection
        held = asyncio.ensure_future(transport.handle_async_request(get(server.port, "/held")))
        await asyncio.sleep(0.05)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        for _ in range(100):
            if server.ended == 1:
                break
            await asyncio.sleep(0.01)
        assert server.ended == 1  # the held connection, closed at once
        other = await transport.handle_async_request(get(server.port))  # a fresh one
        assert other.status_code == 200
        assert server.connections == 2
        await transport.aclose()
        for _ in range(100):
            if server.ended == 2:
                break
            await asyncio.sleep(0.01)
        assert server.ended == 2
        with pytest.raises(RuntimeError, match="closed"):
            await transport.handle_async_request(get(server.port))


async def test_the_watch_takes_an_answer_in_the_first_loop_pass_after_its_bytes() -> None:
    # What this transport is for (bench/bench_propagation.py): the watch publishes a
    # change in the loop pass right after the one that found the socket readable
    # (the stream's reader wakes the watch's task).  httpx.AsyncHTTPTransport
    # (httpcore over anyio) takes one pass more here (3), and ~0.4 ms more CPU per
    # answer, most of what a change's latency lost to go-kit's.
    passes: list[int] = []  # number of non-empty selector polls at each point
    state = {"polls": 0}
    original = selectors.EpollSelector.select if hasattr(selectors, "EpollSelector") \
        else selectors.DefaultSelector.select

    def counting(self: Any, timeout: float | None = None) -> Any:
        state["polls"] += 1
        return original(self, timeout)

    release = asyncio.Event()

    async def change(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = 0
        async for _ in requests_of(reader):
            number += 1
            if number == 2:
                await release.wait()
                passes.append(state["polls"])
            writer.write(answer(b'[{"Service": {"Address": "10.0.0.1", "Port": 80}}]'
                                if number >= 2 else b"[]", index=number))
            await writer.drain()

    async with Server(change) as server:
        broadcaster = Broadcaster(kind="consul", service="web", pending=True)
        published = asyncio.Event()

        def seen(event: object) -> None:
            passes.append(state["polls"])
            if len(passes) > 2:
                published.set()

        broadcaster.subscribe(seen)
        settings = AgentSettings(host="127.0.0.1", port=server.port)
        selector_class = type(asyncio.get_running_loop()._selector)  # type: ignore[attr-defined]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(selector_class, "select", counting)
            task = asyncio.create_task(run_watch(settings, HealthQuery("web", (), True, 10.0),
                                                 broadcaster, lambda: None))
            await asyncio.sleep(0.1)  # the first answer published, the second query held
            assert len(passes) == 1
            release.set()
            await asyncio.wait_for(published.wait(), 5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    sent, received = passes[1], passes[2]
    # the pass after the server's write reads the answer, the next one runs the task
    assert received - sent <= 2, passes


def test_the_watch_clients_send_through_it_unless_a_transport_is_injected() -> None:
    async def build() -> tuple[object, object]:
        plain = AsyncHttpxConsul(AgentSettings(host="127.0.0.1", port=8500))
        mock = httpx.MockTransport(lambda request: httpx.Response(200))
        injected = AsyncHttpxConsul(AgentSettings(host="127.0.0.1", port=8500, transport=mock))
        try:
            return plain.http._transport, injected.http._transport
        finally:
            await plain.aclose()
            await injected.aclose()

    plain, injected = asyncio.run(build())
    assert isinstance(plain, Http11Transport)
    assert isinstance(injected, httpx.MockTransport)


async def test_an_informational_answer_is_skipped_and_a_body_may_end_with_the_connection(
) -> None:
    async def until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Consul-Index: 3\r\n\r\n"
                     b"[1, ")
        await writer.drain()
        writer.write(b"2]")
        writer.close()

    async with Server(until_closed) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        response = await transport.handle_async_request(get(server.port))
        assert response.json() == [1, 2]
        assert response.headers["X-Consul-Index"] == "3"
        assert transport._idle == []  # not kept: it ended
        await transport.aclose()


async def test_an_endless_header_section_is_refused() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b"X-Filler: " + b"x" * 1000 + b"\r\n")
                await writer.drain()

    async with Server(endless) as server:
        transport = Http11Transport("127.0.0.1", server.port)
        with pytest.raises(httpx.RemoteProtocolError, match=r"too long|too large"):
            await transport.handle_async_request(get(server.port))
        await transport.aclose()


async def test_the_watch_clients_ask_for_answers_uncompressed() -> None:
    # Consul gzips every answer to a client that accepts it; compressing a changed
    # answer cost the agent more time than it saved (bench/bench_propagation.py).
    seen: list[httpx.Request] = []

    def agent(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"X-Consul-Index": "3"}, content=b"[]")

    client = AsyncHttpxConsul(AgentSettings(host="127.0.0.1", port=8500,
                                            transport=httpx.MockTransport(agent)))
    try:
        index, entries = await client.health.service("web", index="2", wait="1s")
    finally:
        await client.aclose()
    assert (index, entries) == ("3", [])
    assert seen[0].headers["Accept-Encoding"] == "identity"
