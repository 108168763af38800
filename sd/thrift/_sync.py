"""The thread driver: :class:`ThriftEndpoint`, a Thrift call on blocking sockets.

One call: take a pooled connection (checked with a non-blocking peek: a server
that closed it, or sent bytes nobody asked for, makes it unusable) or connect;
write the whole message with one ``sendall``; read the reply; give the
connection back.  Before every wait the socket's timeout is set to the time
left before the call's deadline (:meth:`Options.deadline`), so connect, the
write and each read end by it.  A failure anywhere closes the connection; the
error is chosen by :func:`sd.thrift._errors.failure`.  A pooled connection
whose write fails is replaced by a new one at once: the request provably did
not leave, and the server had most likely closed the idle connection.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from kitsd.core.deadline import current_deadline
from kitsd.sd.instance import normalize_instance, split_instance
from kitsd.sd.thrift._codec import BadReply, Outcome, undecodable
from kitsd.sd.thrift._errors import ThriftConnectError, ThriftProtocolError, failure
from kitsd.sd.thrift._options import Deadline, Options
from kitsd.sd.thrift._pool import Pool, PoolClosed
from kitsd.sd.thrift._vendor import BufferedTransport

__all__ = ["ThriftEndpoint", "usable"]

_CHUNK = 65536
_MAX_CHUNK = 1 << 20
_SEQIDS = 0x7FFFFFFF
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def usable(sock: socket.socket) -> bool:
    """Whether an idle connection can carry a call: nothing is readable on it (no
    end of stream, no reset, no bytes nobody asked for).  Leaves it non-blocking
    (the call sets its timeout next)."""
    try:
        sock.settimeout(0.0)
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class _Broken(Exception):
    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error


class _TooLarge(Exception):
    pass


class _SocketReader:
    """A thriftpy2 transport over a blocking socket for buffered replies: each
    ``read`` waits at most until the deadline and counts towards the reply's size
    limit; the end of the stream and socket errors leave as :class:`_Broken`."""

    __slots__ = ("_at", "_budget", "_sock")

    def __init__(self, sock: socket.socket, at: float | None, budget: int) -> None:
        self._sock = sock
        self._at = at
        self._budget = budget

    def read(self, n: int) -> bytes:
        if self._budget <= 0:
            raise _TooLarge
        sock = self._sock
        if self._at is not None:
            left = self._at - time.monotonic()
            if left <= 0:
                raise _Broken(TimeoutError())
            sock.settimeout(left)
        try:
            data = sock.recv(max(1, min(n, _CHUNK, self._budget)))
        except OSError as error:
            raise _Broken(error) from error
        if not data:
            raise _Broken(None)
        self._budget -= len(data)
        return data

    def is_open(self) -> bool:
        return True


class ThriftEndpoint:
    """Calls one method of a Thrift service on one instance, over a pool of blocking
    connections.  Built by :func:`sd.thrift.factory`.

    ``endpoint(request)`` sends the request (see :func:`sd.thrift.factory` for its
    forms) and returns the method's result (``None`` for a void or oneway method).
    It raises the service's declared exceptions as decoded, and otherwise the
    errors of :mod:`sd.thrift` (``ThriftConnectError``, ``ThriftTimeout``,
    ``ThriftConnectionLost``, ``ThriftProtocolError``, ``ThriftApplicationError``),
    ``TypeError`` / :class:`kitsd.core.errors.MisuseError` for a request that does
    not fit the method (nothing is sent).

    Thread-safe: each call uses a connection of its own.  :meth:`close` closes the
    idle connections at once and those in use when their calls end; calls after
    it raise :class:`ThriftConnectError` (the request is not sent).  A context
    manager.
    """

    __slots__ = ("_address", "_call", "_lock", "_options", "_pool", "_seqids", "instance")

    def __init__(self, instance: str, options: Options) -> None:
        self.instance = normalize_instance(instance)
        host, port = split_instance(self.instance)
        self._address = (host.strip("[]"), port)
        self._options = options
        self._call = options.call
        self._pool: Pool[socket.socket] = Pool(options.max_idle, options.idle_timeout)
        self._lock = threading.Lock()
        self._seqids = itertools.count(1)

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pool (for inspection)."""
        return len(self._pool)

    def __call__(self, request: Any) -> Any:
        call = self._call
        arguments = call.arguments(request)
        seqid = next(self._seqids) & _SEQIDS
        message = call.encode(arguments, seqid)
        deadline = self._options.deadline(current_deadline(), time.monotonic())
        while True:
            sock, reused = self._take(deadline)
            try:
                error = _send(sock, message, deadline)
            except BaseException:  # KeyboardInterrupt mid-write: never leak the socket
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
            outcome = self._receive(sock, deadline, seqid)
        except BaseException:
            sock.close()
            raise
        self._give(sock)
        return call.unwrap(outcome, self.instance)

    # -- connections ---------------------------------------------------------------

    def _take(self, deadline: Deadline) -> tuple[socket.socket, bool]:
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
                return self._connect(deadline), False
            if usable(sock):
                return sock, True
            sock.close()

    def _connect(self, deadline: Deadline) -> socket.socket:
        wait, bound, by_connect = self._options.connect_wait(deadline, time.monotonic())
        name = self._call.name
        if wait is not None and wait <= 0:
            raise failure(self.instance, name, "connect", TimeoutError(), bound=bound,
                          connect_timeout=by_connect)
        try:
            sock = socket.create_connection(self._address, timeout=wait)
        except OSError as error:
            raise failure(self.instance, name, "connect", error, bound=bound,
                          connect_timeout=by_connect) from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as error:
            sock.close()
            raise failure(self.instance, name, "connect", error, bound=bound) from error
        return sock

    def _give(self, sock: socket.socket) -> None:
        with self._lock:
            extra = self._pool.give(sock, time.monotonic())
        if extra is not None:
            extra.close()

    # -- the reply -----------------------------------------------------------------

    def _receive(self, sock: socket.socket, deadline: Deadline, seqid: int) -> Outcome:
        call = self._call
        if not call.framed:
            reader = _SocketReader(sock, deadline.at, call.max_reply_size)
            try:
                return call.read_reply(call.protocol(BufferedTransport(reader)), seqid)
            except _Broken as broken:
                raise failure(self.instance, call.name, "read", broken.error,
                              bound=deadline.what) from broken.error
            except _TooLarge:
                raise self._bad(f"a reply larger than max_frame_size "
                                f"({call.max_reply_size} bytes)") from None
            except BadReply as bad:
                raise self._bad(str(bad)) from bad.__cause__
            except Exception as error:
                raise self._bad(undecodable(error)) from error
        frame = call.frame_reader()
        at = deadline.at
        while True:
            if at is not None:
                left = at - time.monotonic()
                if left <= 0:
                    raise failure(self.instance, call.name, "read", TimeoutError(),
                                  bound=deadline.what)
                sock.settimeout(left)
            try:
                data = sock.recv(min(max(frame.missing, _CHUNK), _MAX_CHUNK))
            except OSError as error:
                raise failure(self.instance, call.name, "read", error,
                              bound=deadline.what) from error
            if not data:
                raise failure(self.instance, call.name, "read", None, bound=deadline.what)
            try:
                payload = frame.feed(data)
                if payload is not None:
                    return call.decode(payload, seqid)
            except BadReply as bad:
                raise self._bad(str(bad)) from bad.__cause__

    def _bad(self, what: str) -> ThriftProtocolError:
        return ThriftProtocolError(self.instance, self._call.name, f"received {what}")

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the idle connections now and the others as their calls end.
        Idempotent; never waits for a call."""
        with self._lock:
            idle = self._pool.close()
        for sock in idle:
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sd.thrift endpoint {self._call.name} on {self.instance}>"


def _send(sock: socket.socket, message: bytes, deadline: Deadline) -> OSError | None:
    """Write the whole message by the deadline; the error if that failed."""
    try:
        if deadline.at is None:
            sock.settimeout(None)
        else:
            left = deadline.at - time.monotonic()
            if left <= 0:
                return TimeoutError()
            sock.settimeout(left)
        sock.sendall(message)
    except OSError as error:
        return error
    return None
