"""``Http11Transport``: the httpx transport of every watch's and heartbeat's private client.

Theory of operation
-------------------
A watch sends one request at a time to one agent and waits for its answer; the
answer that matters (a change, after a blocking query held for seconds) should
reach the Endpointer as soon as its bytes do.  ``httpx.AsyncHTTPTransport``
(httpcore over anyio) spent ~1.2 ms of CPU (on a loaded 2-core machine, caches
cold after the query was held) between the socket becoming readable and the
Endpointer having the change, against ~0.8 ms through this transport: an
event-loop pass more (anyio checkpoints in its pool lock and cancel shields),
its pool bookkeeping and its network and response models.  That was most of
the gap to go-kit in ``bench/bench_propagation.py``.  This transport speaks
HTTP/1.1 with h11 (the parser httpcore itself uses) over
:func:`asyncio.open_connection`: the answer is parsed in the task the socket
wakes.

It is an ordinary ``httpx.AsyncBaseTransport``: py-consul still builds every
request and judges every answer, httpx still builds the request and decodes
the body (``Content-Encoding``), and failures are httpx's own exceptions, so
:func:`sd.consul.client.map_error` and :func:`~sd.consul.client.reached_agent`
read them as before (``ConnectError``/``ConnectTimeout``: nothing reached the
agent; ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError`` after).

Connections: kept alive between requests (a list of idle ones, reused last in
first out; a request that finds none opens one, so concurrent requests work),
dropped when the agent closes them (seen as end-of-file while idle) or asks to
(``Connection: close``), and closed at once when a request fails or is
cancelled mid-way (its state is unknown).  Timeouts are httpx's
(``request.extensions["timeout"]``): ``connect`` bounds the connection and TLS
handshake, ``read`` each read, ``write`` each flush.  TLS: the settings' SSL
context, checked against the agent's host name.  ``aclose()`` closes every
idle connection; a request in flight is closed by its cancellation.
Use one instance from one event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType

import h11
import httpx

__all__ = ["Http11Transport"]

READ_SIZE = 65536
"""Bytes asked of the socket per read (httpcore's figure)."""


class _Connection:
    """One HTTP/1.1 connection: its streams and its h11 state machine."""

    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        """Whether an idle connection may carry the next request (the agent did not
        close it meanwhile)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        # At once, without a TLS close_notify exchange the agent may never answer; the
        # socket is closed by the loop's next iteration.
        self.writer.transport.abort()


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to one Consul agent at ``host``:``port`` (IPv6 in brackets or bare),
    over TLS when ``ssl_context`` is given (see the module docstring).

    Raises httpx's exceptions, like ``httpx.AsyncHTTPTransport``.  Not thread-safe:
    one event loop.
    """

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._port = port
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        connection = self._take()
        if connection is None:
            connection = await self._connect(request, timeouts.get("connect"))
        try:
            response = await self._exchange(connection, request, body, timeouts)
        except BaseException:
            connection.close()
            raise
        # kept only when both sides are done and the answer did not end with the
        # connection (a body delimited by the agent closing it leaves h11 DONE too)
        if connection.h11.our_state is h11.DONE and connection.h11.their_state is h11.DONE \
                and connection.reusable() and not self._closed:
            connection.h11.start_next_cycle()
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def _take(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    async def _connect(self, request: httpx.Request, within: float | None) -> _Connection:
        try:
            async with asyncio.timeout(within):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                    limit=READ_SIZE)
        except TimeoutError as error:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from error
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(str(error) or type(error).__name__,
                                     request=request) from error
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: httpx.Request, body: bytes,
                        timeouts: dict[str, float | None]) -> httpx.Response:
        machine = connection.h11
        try:
            data = machine.send(h11.Request(method=request.method,
                                            target=request.url.raw_path,
                                            headers=request.headers.raw))
            if body:
                data += machine.send(h11.Data(data=body))
            data += machine.send(h11.EndOfMessage())
        except h11.LocalProtocolError as error:
            raise httpx.LocalProtocolError(str(error), request=request) from error
        await self._write(connection, request, data, timeouts.get("write"))
        read_timeout = timeouts.get("read")
        head: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            try:
                event = machine.next_event()
            except h11.RemoteProtocolError as error:
                raise httpx.RemoteProtocolError(str(error), request=request) from error
            if event is h11.NEED_DATA:
                machine.receive_data(await self._read(connection, request, read_timeout))
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.EndOfMessage):
                break
            # (h11.InformationalResponse, a 1xx before the answer: skipped)
        assert head is not None  # noqa: S101 - h11 gives the head before EndOfMessage
        return httpx.Response(
            head.status_code, headers=head.headers.raw_items(), content=b"".join(chunks),
            request=request,
            extensions={"http_version": b"HTTP/" + head.http_version,
                        "reason_phrase": head.reason},
        )

    @staticmethod
    async def _write(connection: _Connection, request: httpx.Request, data: bytes,
                     within: float | None) -> None:
        connection.writer.write(data)
        try:
            async with asyncio.timeout(within):
                await connection.writer.drain()
        except TimeoutError as error:
            raise httpx.WriteTimeout("timed out sending", request=request) from error
        except OSError as error:
            raise httpx.WriteError(str(error) or type(error).__name__,
                                   request=request) from error

    @staticmethod
    async def _read(connection: _Connection, request: httpx.Request,
                    within: float | None) -> bytes:
        try:
            async with asyncio.timeout(within):
                return await connection.reader.read(READ_SIZE)  # b"" at end-of-file
        except TimeoutError as error:
            raise httpx.ReadTimeout("timed out reading", request=request) from error
        except OSError as error:
            raise httpx.ReadError(str(error) or type(error).__name__,
                                  request=request) from error

    async def aclose(self) -> None:
        """Close every idle connection; later requests raise ``RuntimeError``.  Idempotent."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def __aexit__(self, exc_type: type[BaseException] | None = None,
                        exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self.aclose()
