"""sd.http: async twins of test_http.py (AsyncHTTPEndpoint on httpx.AsyncClient)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from kitsd import sd
from kitsd.core.deadline import reset_deadline, set_deadline
from kitsd.core.endpoint import close_endpoint, is_async
from kitsd.core.errors import ConnectionFailure, KitsdError
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.http import AsyncHTTPEndpoint, StatusError
from kitsd.sd.instancer import FixedInstancer
from tests.helpers import async_wait_for
from tests.sd.test_http import SLOW_MAX, LocalServer, as_json, closed_port, deadline_in, no_args

MakeAsync = Callable[..., AsyncHTTPEndpoint[Any, Any]]


@pytest.fixture
def server(no_thread_leaks: None) -> Iterator[LocalServer]:
    """A running :class:`LocalServer`; after the test, no thread may be left (client or server)."""
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
async def make(server: LocalServer) -> AsyncIterator[MakeAsync]:
    """Build async endpoints on ``server`` (GET /echo by default); all are closed after the test."""
    made: list[AsyncHTTPEndpoint[Any, Any]] = []

    def build(
        method: str = "GET", path: str = "/echo", instance: str | None = None, **kwargs: Any
    ) -> AsyncHTTPEndpoint[Any, Any]:
        kwargs.setdefault("encode", no_args)
        kwargs.setdefault("decode", as_json)
        endpoint = sd.http.async_factory(method, path, **kwargs)(instance or server.instance)
        made.append(endpoint)
        return endpoint

    yield build
    for endpoint in made:
        await endpoint.aclose()


def mock_endpoint(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    decode: Callable[[httpx.Response], Any] = as_json,
    **kwargs: Any,
) -> AsyncHTTPEndpoint[Any, Any]:
    client_kwargs = {"transport": httpx.MockTransport(handler), **kwargs.pop("client_kwargs", {})}
    return AsyncHTTPEndpoint(
        "svc.local:8080", "GET", "/x", encode=no_args, decode=decode,
        client_kwargs=client_kwargs, **kwargs,
    )


def other_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current}


# --- requests and responses ------------------------------------------------------------------


async def test_encoded_arguments_reach_the_server(make: MakeAsync) -> None:
    def encode(request: dict[str, Any]) -> dict[str, Any]:
        return {"json": request, "params": {"q": "kit"}, "headers": {"X-Trace": "abc"}}

    answer = await make("post", encode=encode)({"hello": [1, 2]})

    assert answer["method"] == "POST"
    assert json.loads(answer["body"]) == {"hello": [1, 2]}
    assert answer["query"] == {"q": ["kit"]}
    assert answer["headers"]["x-trace"] == "abc"


async def test_decode_result_is_returned(make: MakeAsync) -> None:
    def decode(response: httpx.Response) -> tuple[int, str]:
        assert response.is_closed  # body read in full first
        return response.status_code, response.json()["method"]

    assert await make(decode=decode)(None) == (200, "GET")


async def test_client_is_created_lazily_on_first_call(make: MakeAsync) -> None:
    endpoint = make()
    assert endpoint.client is None
    await endpoint(None)
    client = endpoint.client
    assert isinstance(client, httpx.AsyncClient)
    await endpoint(None)
    assert endpoint.client is client


async def test_keep_alive_reuses_one_connection(make: MakeAsync, server: LocalServer) -> None:
    endpoint = make()
    ports = [(await endpoint(None))["client_port"] for _ in range(3)]
    assert len(set(ports)) == 1
    assert server.connections == 1


async def test_concurrent_tasks_share_the_endpoint(make: MakeAsync) -> None:
    endpoint = make(encode=lambda n: {"params": {"n": n}})
    answers = await asyncio.gather(*(endpoint(n) for n in range(8)))
    assert [answer["query"]["n"] for answer in answers] == [[str(n)] for n in range(8)]


# --- statuses ----------------------------------------------------------------------------------


async def test_non_2xx_raises_status_error(make: MakeAsync, server: LocalServer) -> None:
    decoded: list[httpx.Response] = []
    endpoint = make(path="/status/503", decode=decoded.append)
    with pytest.raises(StatusError) as caught:
        await endpoint(None)
    error = caught.value
    assert isinstance(error, KitsdError)
    assert error.status_code == 503
    assert error.instance == server.instance
    assert error.response.json() == {"status": 503}
    assert str(error) == f"HTTP 503 from {server.instance} (GET /status/503)"
    assert decoded == []


async def test_accept_status_lets_a_status_through_to_decode(make: MakeAsync) -> None:
    endpoint = make(path="/status/404", accept_status={404}, decode=lambda r: r.status_code)
    assert await endpoint(None) == 404
    refused = make(path="/status/410", accept_status={404})
    with pytest.raises(StatusError) as caught:
        await refused(None)
    assert caught.value.status_code == 410


async def test_decode_errors_propagate(make: MakeAsync) -> None:
    def decode(response: httpx.Response) -> None:
        raise LookupError(response.status_code)

    endpoint = make(path="/status/404", accept_status=lambda status: status < 500, decode=decode)
    with pytest.raises(LookupError) as caught:
        await endpoint(None)
    assert caught.value.args == (404,)


async def test_odd_answers_from_a_mock_transport() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "/y"})

    async with mock_endpoint(redirect, scheme="https") as endpoint:
        with pytest.raises(StatusError) as caught:
            await endpoint(None)
        assert endpoint.base_url == "https://svc.local:8080"
    assert caught.value.status_code == 301
    assert str(caught.value.response.request.url) == "https://svc.local:8080/x"


# --- connection failures -----------------------------------------------------------------------


async def test_connect_error_on_a_closed_port_is_a_connection_failure(
    no_thread_leaks: None,
) -> None:
    instance = f"127.0.0.1:{closed_port()}"
    endpoint = sd.http.async_factory("GET", "/echo", encode=no_args, decode=as_json)(instance)
    async with endpoint:
        with pytest.raises(httpx.ConnectError) as caught:
            await endpoint(None)
    assert isinstance(caught.value, ConnectionFailure)


async def test_connect_timeout_caused_by_the_deadline_is_not_a_connection_failure() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    async with mock_endpoint(hang, client_kwargs={"timeout": 5.0}) as endpoint:
        with pytest.raises(httpx.ConnectTimeout) as outside:
            await endpoint(None)
        with deadline_in(1.0), pytest.raises(TimeoutError) as inside:
            await endpoint(None)
    assert isinstance(outside.value, ConnectionFailure)
    assert not isinstance(inside.value, ConnectionFailure)
    assert isinstance(inside.value.__cause__, httpx.ConnectTimeout)


# --- deadlines ---------------------------------------------------------------------------------


async def test_deadline_caps_every_timeout_phase() -> None:
    timeouts: list[dict[str, float | None]] = []

    def record(request: httpx.Request) -> httpx.Response:
        timeouts.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={})

    configured = httpx.Timeout(10.0, connect=0.5, pool=None)
    async with mock_endpoint(record, client_kwargs={"timeout": configured}) as endpoint:
        await endpoint(None)
        with deadline_in(2.0):
            await endpoint(None)

    outside, inside = timeouts
    assert outside == {"connect": 0.5, "read": 10.0, "write": 10.0, "pool": None}
    assert inside["connect"] == 0.5
    for phase in ("read", "write", "pool"):
        value = inside[phase]
        assert value is not None
        assert 1.0 < value <= 2.0, (phase, value)


async def test_slow_request_times_out_at_the_deadline_and_hangs_up(
    make: MakeAsync, server: LocalServer
) -> None:
    endpoint = make(path="/slow")
    started = time.monotonic()
    with deadline_in(0.2), pytest.raises(TimeoutError) as caught:
        await endpoint(None)
    elapsed = time.monotonic() - started

    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)

    assert server.slow_started.is_set()
    assert elapsed < 0.2 + 1.0 < SLOW_MAX
    await async_wait_for(server.hung_up.is_set, timeout=3.0, what="the server to see the hang-up")
    assert not server.release.is_set()
    assert other_tasks() == set()


async def test_no_time_left_raises_without_sending(make: MakeAsync, server: LocalServer) -> None:
    encoded: list[object] = []

    def encode(request: object) -> dict[str, Any]:
        encoded.append(request)
        return {}

    endpoint = make(encode=encode)
    token = set_deadline(time.monotonic() - 1.0)
    try:
        with pytest.raises(TimeoutError) as caught:
            await endpoint("never sent")
    finally:
        reset_deadline(token)
    assert not isinstance(caught.value, ConnectionFailure)
    assert encoded == []
    assert server.seen == []
    assert server.connections == 0


# --- lifecycle ---------------------------------------------------------------------------------


async def test_aclose_closes_the_client_and_its_connections(
    make: MakeAsync, server: LocalServer
) -> None:
    endpoint = make()
    await endpoint(None)
    client = endpoint.client
    assert client is not None
    assert server.active == 1

    await endpoint.aclose()
    await endpoint.aclose()  # idempotent

    assert client.is_closed
    assert endpoint.client is client  # kept, closed, for inspection (as the sync one's)
    await async_wait_for(lambda: server.active == 0, timeout=3.0, what="the connection to close")
    with pytest.raises(RuntimeError, match="closed"):
        await endpoint(None)
    assert endpoint.client is client  # a closed endpoint does not make a new client


async def test_aclose_before_any_call_makes_no_client(make: MakeAsync) -> None:
    endpoint = make()
    await endpoint.aclose()
    assert endpoint.client is None
    with pytest.raises(RuntimeError):
        await endpoint(None)
    assert endpoint.client is None


async def test_async_endpoint_shape(make: MakeAsync) -> None:
    endpoint = make()
    assert is_async(endpoint)
    assert not hasattr(endpoint, "close")
    assert "127.0.0.1" in repr(endpoint)


async def test_close_endpoint_uses_aclose(make: MakeAsync, server: LocalServer) -> None:
    endpoint = make()
    await endpoint(None)
    client = endpoint.client
    assert client is not None
    pending = close_endpoint(endpoint)
    assert isinstance(pending, asyncio.Future)  # a task on this, the running, loop
    await pending
    assert client.is_closed


async def test_nothing_is_left_running_after_aclose(server: LocalServer) -> None:
    threads_before = set(threading.enumerate())
    tasks_before = other_tasks()
    endpoint = sd.http.async_factory("GET", "/echo", encode=no_args, decode=as_json)(
        server.instance
    )
    async with endpoint:
        await asyncio.gather(*(endpoint(None) for _ in range(4)))
    assert other_tasks() == tasks_before
    await async_wait_for(
        lambda: not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()],
        timeout=3.0,
        what="the server's handler threads to end",
    )
    assert server.active == 0


async def test_endpointer_acloses_async_http_endpoints(server: LocalServer) -> None:
    make_endpoint = sd.http.async_factory("GET", "/echo", encode=no_args, decode=as_json)
    async with Endpointer(FixedInstancer([server.instance]), make_endpoint) as endpointer:
        (endpoint,) = endpointer.endpoints()
        assert (await endpoint(None))["method"] == "GET"
        assert isinstance(endpoint, AsyncHTTPEndpoint)
        client = endpoint.client
    assert client is not None
    assert client.is_closed
    await async_wait_for(lambda: server.active == 0, timeout=3.0, what="the connection to close")


# --- event loops -------------------------------------------------------------------------------


class LoopThread:
    """An event loop running in its own thread, stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop")
        self.thread.start()

    async def run(self, coroutine: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


async def test_a_call_from_another_loop_is_refused(make: MakeAsync) -> None:
    endpoint = make()
    await endpoint(None)
    other = LoopThread()
    try:
        with pytest.raises(RuntimeError, match="another event loop"):
            await other.run(endpoint(None))
    finally:
        other.stop()


async def test_aclose_runs_on_the_loop_that_owns_the_client(
    make: MakeAsync, server: LocalServer
) -> None:
    endpoint = make()
    other = LoopThread()
    try:
        assert (await other.run(endpoint(None)))["method"] == "GET"
        client = endpoint.client
        assert client is not None
        await endpoint.aclose()  # from this loop: handed to the owner loop
        assert client.is_closed
        await async_wait_for(lambda: server.active == 0, timeout=3.0, what="the close")
    finally:
        other.stop()


async def test_aclose_after_the_owner_loop_stopped_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    endpoint = mock_endpoint(answer)
    other = LoopThread()
    try:
        assert await other.run(endpoint(None)) == {"ok": True}
    finally:
        other.stop()
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.http"):
        await endpoint.aclose()
    assert any("could not be closed cleanly" in record.getMessage() for record in caplog.records)
