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
import itertools
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from kitsd.core.deadline import current_deadline
from kitsd.sd.instance import normalize_instance, split_instance
from kitsd.sd.thrift._codec import BadReply, Call, Outcome, undecodable
from kitsd.sd.thrift._errors import Phase, ThriftConnectError, ThriftProtocolError, failure
from kitsd.sd.thrift._options import Deadline, Options
from kitsd.sd.thrift._pool import Pool, PoolClosed
from kitsd.sd.thrift._sync import usable
from kitsd.sd.thrift._vendor import AsyncBinaryProtocol, AsyncCompactProtocol, TApplicationException

__all__ = ["AsyncThriftEndpoint"]

_CHUNK = 65536
_MAX_CHUNK = 1 << 20
_SEQIDS = 0x7FFFFFFF
#: Reads served from the buffer between two yields to the event loop.
_YIELD_EVERY = 256


class _Broken(Exception):
    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error


class _TooLarge(Exception):
    pass


class _AsyncSocketReader:
    """A transport for thriftpy2's asyncio protocols: ``read(n)`` returns exactly
    ``n`` bytes, refusing (before reading any) a reply that would outgrow the size
    limit; the end of the stream and socket errors leave as :class:`_Broken`.

    A read served from the buffer never suspends, so a reply of millions of tiny
    values would decode without ever giving the loop back (no other task runs, and
    ``asyncio.timeout`` cannot fire): every :data:`_YIELD_EVERY` reads it yields, and
    past the deadline ``at`` it raises :class:`_Broken` (a timeout)."""

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
            raise _TooLarge
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            if self._at is not None and time.monotonic() >= self._at:
                raise _Broken(TimeoutError())
            await asyncio.sleep(0)  # other tasks run; a timeout or a cancel lands here
        buffer = self._buffer
        while len(buffer) < n:
            try:
                data = await self._loop.sock_recv(
                    self._sock, min(max(n - len(buffer), _CHUNK), _MAX_CHUNK))
            except OSError as error:
                raise _Broken(error) from error
            if not data:
                raise _Broken(None)
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
            data = await loop.sock_recv(sock, min(max(frame.missing, _CHUNK), _MAX_CHUNK))
        except OSError as error:
            raise _Broken(error) from error
        if not data:
            raise _Broken(None)
        payload = frame.feed(data)
        if payload is not None:
            return call.decode(payload, seqid)


def _timeout(at: float | None) -> asyncio.Timeout:
    return asyncio.timeout(None if at is None else at - time.monotonic())


class AsyncThriftEndpoint:
    """The asyncio twin of :class:`sd.thrift.ThriftEndpoint` (same requests, results
    and errors); built by :func:`sd.thrift.async_factory`.

    Safe for concurrent tasks, on one loop or several (each call uses a connection
    of its own; the pool's bookkeeping is under a plain lock, never held across an
    ``await``).  :meth:`close` / :meth:`aclose` close the idle connections at once
    and those in use when their calls end.  An async context manager.
    """

    __slots__ = ("_call", "_family", "_host", "_lock", "_options", "_pool", "_port",
                 "_seqids", "instance")

    def __init__(self, instance: str, options: Options) -> None:
        self.instance = normalize_instance(instance)
        self._host, self._port = split_instance(self.instance)
        try:
            version = ipaddress.ip_address(self._host).version
        except ValueError:
            self._family: int | None = None  # a name: resolved by each connect
        else:
            self._family = socket.AF_INET6 if version == 6 else socket.AF_INET
        self._options = options
        self._call = options.call
        self._pool: Pool[socket.socket] = Pool(options.max_idle, options.idle_timeout)
        self._lock = threading.Lock()
        self._seqids = itertools.count(1)

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pool (for inspection)."""
        return len(self._pool)

    async def __call__(self, request: Any) -> Any:
        call = self._call
        arguments = call.arguments(request)
        seqid = next(self._seqids) & _SEQIDS
        message = call.encode(arguments, seqid)
        deadline = self._options.deadline(current_deadline(), time.monotonic())
        loop = asyncio.get_running_loop()
        while True:
            sock, reused = await self._take(loop, deadline)
            try:
                error = await self._send(loop, sock, message, deadline)
            except BaseException:
                sock.close()
                raise
            if error is None:
                break
            sock.close()
            if not (reused and not isinstance(error, TimeoutError)):
                raise failure(self.instance, call.name, "write", error,
                              bound=deadline.what) from error
        if call.oneway:
            self._give(sock)
            return None
        try:
            outcome = await self._receive(loop, sock, deadline, seqid)
        except BaseException:
            sock.close()
            raise
        self._give(sock)
        return call.unwrap(outcome, self.instance)

    # -- connections ---------------------------------------------------------------

    async def _take(self, loop: asyncio.AbstractEventLoop,
                    deadline: Deadline) -> tuple[socket.socket, bool]:
        while True:
            with self._lock:
                try:
                    sock, expired = self._pool.take(time.monotonic())
                except PoolClosed:
                    raise ThriftConnectError(self.instance, self._call.name,
                                             "the endpoint is closed (its instance left)"
                                             ) from None
            for old in expired:
                old.close()
            if sock is None:
                return await self._connect(loop, deadline), False
            if usable(sock):
                return sock, True
            sock.close()

    async def _connect(self, loop: asyncio.AbstractEventLoop,
                       deadline: Deadline) -> socket.socket:
        wait, bound, by_connect = self._options.connect_wait(deadline, time.monotonic())
        name = self._call.name
        if wait is not None and wait <= 0:
            raise failure(self.instance, name, "connect", TimeoutError(), bound=bound,
                          connect_timeout=by_connect)
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

    def _give(self, sock: socket.socket) -> None:
        with self._lock:
            extra = self._pool.give(sock, time.monotonic())
        if extra is not None:
            extra.close()

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

    async def _receive(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                       deadline: Deadline, seqid: int) -> Outcome:
        call = self._call
        phase: Phase = "read"
        if deadline.at is not None and deadline.at <= time.monotonic():
            raise failure(self.instance, call.name, phase, TimeoutError(), bound=deadline.what)
        try:
            async with _timeout(deadline.at):
                if not call.framed:
                    reader = _AsyncSocketReader(loop, sock, call.max_reply_size,
                                                deadline.at)
                    return await _read_reply(call, _async_protocol(call, reader), seqid)
                return await _read_framed(loop, sock, call, seqid)
        except _Broken as broken:
            raise failure(self.instance, call.name, phase, broken.error,
                          bound=deadline.what) from broken.error
        except OSError as error:  # TimeoutError included
            raise failure(self.instance, call.name, phase, error, bound=deadline.what) from error
        except _TooLarge:
            raise self._bad(f"a reply larger than max_frame_size ({call.max_reply_size} bytes)"
                            ) from None
        except BadReply as bad:
            raise self._bad(str(bad)) from bad.__cause__
        except Exception as error:
            raise self._bad(undecodable(error)) from error

    def _bad(self, what: str) -> ThriftProtocolError:
        return ThriftProtocolError(self.instance, self._call.name, f"received {what}")

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the idle connections now and the others as their calls end.
        Idempotent; needs no event loop; never waits for a call."""
        with self._lock:
            idle = self._pool.close()
        for sock in idle:
            sock.close()

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
