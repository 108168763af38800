"""sd.http: the retry deadline bounds the whole request, against a server that trickles.

httpx's timeouts are per read: a server sending one byte every 100 ms never trips
a 1 s read timeout, and used to keep a sync call for the whole 8 s of its answer
against a 1 s retry timeout (issue 7.8).  :class:`TrickleServer` is that server,
on a raw socket.  Also here: the check that the httpx/httpcore layout the
deadline backend relies on is still there.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from kitsd import lb, sd
from kitsd.core.errors import ConnectionFailure
from kitsd.sd.http import _deadline
from tests.helpers import async_wait_for, wait_for
from tests.sd.test_http import deadline_in

BODY = b"x" * 80
GAP = 0.1  # seconds between two trickled bytes: the whole answer takes 8 s
DEADLINE = 1.0
BOUND = 3.0  # generous: the deadline plus scheduling noise on a loaded machine


class TrickleServer:
    """Answers every request 200 with an 80-byte body sent one byte per ``GAP``.

    With ``headers_too``, the status line and headers trickle as well.  Records
    when the client hangs up (a send fails), and stops every thread on :meth:`close`.
    """

    def __init__(self, *, headers_too: bool = False, body: bytes = BODY) -> None:
        self.headers_too = headers_too
        self.body = body
        self.hung_up = threading.Event()
        self.requests = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="trickle-accept")
        self._accepting.start()

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="trickle-conn")
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                received += chunk
            self.requests += 1
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)
            if not self.headers_too:
                conn.sendall(head)
            trickled = (head if self.headers_too else b"") + self.body
            for byte in trickled:
                if self._stop.wait(GAP):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client closed the connection
                    self.hung_up.set()
                    return

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()


@pytest.fixture
def trickle(no_thread_leaks: None) -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


@pytest.fixture
def trickle_headers(no_thread_leaks: None) -> Iterator[TrickleServer]:
    server = TrickleServer(headers_too=True)
    yield server
    server.close()


def _bytes(response: httpx.Response) -> bytes:
    return response.content


def _no_args(_request: object) -> dict[str, Any]:
    return {}


def test_sync_retry_is_bounded_by_its_timeout_against_a_trickled_body(
    trickle: TrickleServer,
) -> None:
    make = sd.http.factory("GET", "/", encode=_no_args, decode=_bytes)
    with sd.Endpointer(sd.FixedInstancer([trickle.instance]), make) as endpointer:
        call = lb.retry(1, DEADLINE, lb.RoundRobin(endpointer))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            call(None)
        elapsed = time.monotonic() - started
        assert trickle.requests == 1
        assert DEADLINE * 0.9 <= elapsed < BOUND
        # Nothing left running: the abandoned request's connection was closed.
        wait_for(trickle.hung_up.is_set, timeout=2.0, what="the server to see the hang-up")


@pytest.mark.parametrize("server", ["trickle", "trickle_headers"])
def test_sync_endpoint_under_a_deadline_raises_timeout_error_at_it(
    server: str, request: pytest.FixtureRequest
) -> None:
    trickling: TrickleServer = request.getfixturevalue(server)
    endpoint = sd.http.factory("GET", "/", encode=_no_args, decode=_bytes)(trickling.instance)
    with endpoint:
        started = time.monotonic()
        with deadline_in(DEADLINE), pytest.raises(TimeoutError) as caught:
            endpoint(None)
        elapsed = time.monotonic() - started
    assert DEADLINE * 0.9 <= elapsed < BOUND
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert not isinstance(caught.value, ConnectionFailure)
    assert trickling.instance in str(caught.value)
    wait_for(trickling.hung_up.is_set, timeout=2.0, what="the server to see the hang-up")


def test_a_trickled_body_within_the_deadline_is_read_in_full(no_thread_leaks: None) -> None:
    server = TrickleServer(body=b"hello")
    try:
        endpoint = sd.http.factory("GET", "/", encode=_no_args, decode=_bytes)(server.instance)
        with endpoint, deadline_in(30.0):
            assert endpoint(None) == b"hello"
    finally:
        server.close()


def test_the_configured_read_timeout_still_applies_under_a_longer_deadline(
    trickle_headers: TrickleServer,
) -> None:
    endpoint = sd.http.factory(
        "GET", "/", encode=_no_args, decode=_bytes,
        client_kwargs={"timeout": httpx.Timeout(5.0, read=GAP / 4)},
    )(trickle_headers.instance)
    with endpoint, deadline_in(30.0), pytest.raises(httpx.ReadTimeout):
        endpoint(None)


async def test_async_endpoint_under_a_deadline_raises_timeout_error_at_it(
    trickle: TrickleServer,
) -> None:
    endpoint = sd.http.async_factory("GET", "/", encode=_no_args, decode=_bytes)(
        trickle.instance
    )
    async with endpoint:
        started = time.monotonic()
        with deadline_in(DEADLINE), pytest.raises(TimeoutError) as caught:
            await endpoint(None)
        elapsed = time.monotonic() - started
    assert DEADLINE * 0.9 <= elapsed < BOUND
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    await async_wait_for(trickle.hung_up.is_set, timeout=2.0, what="the hang-up")


async def test_async_retry_is_bounded_by_its_timeout_against_a_trickled_body(
    trickle: TrickleServer,
) -> None:
    make = sd.http.async_factory("GET", "/", encode=_no_args, decode=_bytes)
    async with sd.Endpointer(sd.FixedInstancer([trickle.instance]), make) as endpointer:
        call = lb.retry_async(1, DEADLINE, lb.RoundRobin(endpointer))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await call(None)
        elapsed = time.monotonic() - started
        assert DEADLINE * 0.9 <= elapsed < BOUND
        await async_wait_for(trickle.hung_up.is_set, timeout=2.0, what="the hang-up")


# --- the vendor layout the deadline backend relies on --------------------------------------------


def test_httpx_transports_keep_an_httpcore_pool_with_a_network_backend() -> None:
    """If this fails, httpx or httpcore changed where ``_deadline.install`` reaches:
    requests would then be bounded per phase only (a warning says so at run time)."""
    with httpx.HTTPTransport() as transport:
        assert isinstance(transport._pool, httpcore.ConnectionPool)
        assert isinstance(transport._pool._network_backend, httpcore.NetworkBackend)
        assert _deadline.install(transport)
        assert isinstance(transport._pool._network_backend, _deadline.DeadlineBackend)
    async_transport = httpx.AsyncHTTPTransport()
    assert isinstance(async_transport._pool, httpcore.AsyncConnectionPool)
    assert isinstance(async_transport._pool._network_backend, httpcore.AsyncNetworkBackend)
    assert _deadline.install_async(async_transport)
    assert isinstance(async_transport._pool._network_backend, _deadline.AsyncDeadlineBackend)


def test_a_changed_layout_is_reported_once_and_tolerated(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kitsd.sd.http._sync import deadline as sync_deadline

    monkeypatch.setattr(sync_deadline, "_warned", False)

    class Odd(httpx.HTTPTransport):
        def __init__(self) -> None:
            pass  # no _pool at all

    with caplog.at_level("WARNING", logger="kitsd.sd.http._sync.deadline"):
        assert not _deadline.install(Odd())
        assert not _deadline.install(Odd())
    assert len([r for r in caplog.records if "per phase only" in r.getMessage()]) == 1


def test_no_time_left_at_a_socket_wait_raises_the_phase_timeout() -> None:
    class Stream(httpcore.NetworkStream):
        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            raise AssertionError("read after the deadline")

    stream = _deadline.DeadlineStream(Stream())
    with deadline_in(-1.0), pytest.raises(httpcore.ReadTimeout):
        stream.read(10, timeout=5.0)
