"""The asyncio driver: :class:`AsyncThriftEndpoint`, the twin of
:class:`sd.thrift._sync.ThriftEndpoint` on non-blocking sockets and the running
loop's ``sock_*`` methods.

The steps and the rules are the sync driver's (and :mod:`sd.thrift._codec`'s and
:mod:`sd.thrift._pool`'s, which both share); only the waiting differs: each phase
(connect; write and read) runs under one ``asyncio.timeout`` ending at the
call's deadline.  Sockets belong to no loop, so one endpoint may serve several
loops, and closing it needs no loop (``close()`` is plain; ``aclose()`` is
offered for ``async with``).  A cancelled call closes its connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from types import TracebackType
from typing import Any, Self

from kitsd.sd.instance import split_instance
from kitsd.sd.thrift._base import CHUNK, MAX_CHUNK, Broken, EndpointBase, TooLarge, fed
from kitsd.sd.thrift._codec import Call, Outcome
from kitsd.sd.thrift._errors import failure
from kitsd.sd.thrift._options import Deadline, Options
from kitsd.sd.thrift._vendor import AsyncBinaryProtocol, AsyncCompactProtocol, TApplicationException

__all__ = ["AsyncThriftEndpoint"]

#: Reads served from the buffer between two yields to the event loop.
_YIELD_EVERY = 256


class _AsyncSocketReader:
    """A transport for thriftpy2's asyncio protocols: ``read(n)`` returns exactly
    ``n`` bytes, refusing (before reading any) a reply that would outgrow the size
    limit; the end of the stream and socket errors leave as :class:`Broken`.

    A read served from the buffer never suspends, so a reply of millions of tiny
    values would decode without ever giving the loop back (no other task runs, and
    ``asyncio.timeout`` cannot fire): every :data:`_YIELD_EVERY` reads it yields, and
    past the deadline ``at`` it raises :class:`Broken` (a timeout)."""

    __slots__ = ("_at", "_budget", "_buffer", "_loop", "_since_yield", "_sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 budget: int, at: float | None = None) -> None:
        self._loop = loop
        self._sock = sock
        self._budget = budget
        self._buffer = bytearray()
        self._at = at
        self._since_yield = 0

    async def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if n > self._budget:
            raise TooLarge
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            if self._at is not None and time.monotonic() >= self._at:
                raise Broken(TimeoutError())
            await asyncio.sleep(0)  # other tasks run; a timeout or a cancel lands here
        buffer = self._buffer
        while len(buffer) < n:
            try:
                data = await self._loop.sock_recv(
                    self._sock, min(max(n - len(buffer), CHUNK), MAX_CHUNK))
            except OSError as error:
                raise Broken(error) from error
            if not data:
                raise Broken(None)
            buffer += data
        self._budget -= n
        out = bytes(buffer[:n])
        del buffer[:n]
        return out


def _async_protocol(call: Call, reader: _AsyncSocketReader) -> Any:
    if call.protocol_name == "compact":
        return AsyncCompactProtocol(reader)
    return AsyncBinaryProtocol(reader)


async def _read_reply(call: Call, protocol: Any, seqid: int) -> Outcome:
    """:meth:`Call.read_reply` for thriftpy2's asyncio protocols."""
    name, kind, received = await protocol.read_message_begin()
    if call.check_begin(name, kind, received, seqid):
        application = TApplicationException()
        await protocol.read_struct(application)
        await protocol.read_message_end()
        return Outcome(application=application)
    result = call.new_result()
    await protocol.read_struct(result)
    await protocol.read_message_end()
    return call.outcome(result)


async def _read_framed(loop: asyncio.AbstractEventLoop, sock: socket.socket, call: Call,
                       seqid: int) -> Outcome:
    """Read one frame (bounded by ``max_frame_size``) and decode it."""
    frame = call.frame_reader()
    while True:
        try:
            data = await loop.sock_recv(sock, min(max(frame.missing, CHUNK), MAX_CHUNK))
        except OSError as error:
            raise Broken(error) from error
        outcome = fed(call, frame, data, seqid)
        if outcome is not None:
            return outcome


def _timeout(at: float | None) -> asyncio.Timeout:
    return asyncio.timeout(None if at is None else at - time.monotonic())


class AsyncThriftEndpoint(EndpointBase):
    """The asyncio twin of :class:`sd.thrift.ThriftEndpoint` (same requests, results
    and errors); built by :func:`sd.thrift.async_factory`.

    Safe for concurrent tasks, on one loop or several (each call uses a connection
    of its own; the pool's bookkeeping is under a plain lock, never held across an
    ``await``).  :meth:`close` / :meth:`aclose` close the idle connections at once
    and those in use when their calls end.  An async context manager.
    """

    __slots__ = ("_family", "_host", "_port")

    def __init__(self, instance: str, options: Options) -> None:
        super().__init__(instance, options)
        self._host, self._port = split_instance(self.instance)
        try:
            version = ipaddress.ip_address(self._host).version
        except ValueError:
            self._family: int | None = None  # a name: resolved by each connect
        else:
            self._family = socket.AF_INET6 if version == 6 else socket.AF_INET

    async def __call__(self, request: Any) -> Any:
        seqid, message, deadline = self._encode(request)
        loop = asyncio.get_running_loop()
        while True:
            sock, reused = await self._take(loop, deadline)
            with self._closed_if_raised(sock):
                error = await self._send(loop, sock, message, deadline)
            if self._sent(sock, error, reused=reused, deadline=deadline):
                break
        with self._reading(sock, deadline):
            outcome = None if self._call.oneway \
                else await self._receive(loop, sock, deadline, seqid, self._call)
        return self._finish(sock, outcome)

    # -- connections ---------------------------------------------------------------

    async def _take(self, loop: asyncio.AbstractEventLoop,
                    deadline: Deadline) -> tuple[socket.socket, bool]:
        sock = self._pooled()
        return (sock, True) if sock is not None else (await self._connect(loop, deadline), False)

    async def _connect(self, loop: asyncio.AbstractEventLoop,
                       deadline: Deadline) -> socket.socket:
        wait, bound, by_connect = self._connect_wait(deadline)
        name = self._call.name
        try:
            async with asyncio.timeout(wait):
                return await self._open(loop)
        except OSError as error:  # TimeoutError included
            raise failure(self.instance, name, "connect", error, bound=bound,
                          connect_timeout=by_connect) from error

    async def _open(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        if self._family is not None:
            addresses: list[tuple[int, Any]] = [(self._family, (self._host, self._port))]
        else:
            found = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
            addresses = [(family, address) for family, _, _, _, address in found]
        last: OSError = OSError(f"no address for {self._host}")
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except OSError as error:
                sock.close()
                if isinstance(error, TimeoutError):
                    raise
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise last

    # -- the request and the reply -------------------------------------------------

    @staticmethod
    async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, message: bytes,
                    deadline: Deadline) -> OSError | None:
        if deadline.at is not None and deadline.at <= time.monotonic():
            return TimeoutError()
        try:
            async with _timeout(deadline.at):
                await loop.sock_sendall(sock, message)
        except OSError as error:  # TimeoutError included
            return error
        return None

    @staticmethod
    async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                       deadline: Deadline, seqid: int, call: Call) -> Outcome:
        """Read and decode the reply by the deadline (errors: see
        :meth:`EndpointBase._reply_failure`)."""
        if deadline.at is not None and deadline.at <= time.monotonic():
            raise Broken(TimeoutError())
        async with _timeout(deadline.at):
            if not call.framed:
                reader = _AsyncSocketReader(loop, sock, call.max_reply_size, deadline.at)
                return await _read_reply(call, _async_protocol(call, reader), seqid)
            return await _read_framed(loop, sock, call, seqid)

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with`` and code that awaits its closes."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sd.thrift async endpoint {self._call.name} on {self.instance}>"
