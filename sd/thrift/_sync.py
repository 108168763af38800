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

import socket
import time
from types import TracebackType
from typing import Any, Self

from kitsd.sd.instance import split_instance
from kitsd.sd.thrift._base import CHUNK, MAX_CHUNK, Broken, EndpointBase, TooLarge, fed
from kitsd.sd.thrift._codec import Call, Outcome
from kitsd.sd.thrift._errors import failure
from kitsd.sd.thrift._options import Deadline, Options
from kitsd.sd.thrift._vendor import BufferedTransport

__all__ = ["ThriftEndpoint"]


class _SocketReader:
    """A thriftpy2 transport over a blocking socket for buffered replies: each
    ``read`` waits at most until the deadline and counts towards the reply's size
    limit; the end of the stream and socket errors leave as :class:`Broken`."""

    __slots__ = ("_at", "_budget", "_sock")

    def __init__(self, sock: socket.socket, at: float | None, budget: int) -> None:
        self._sock = sock
        self._at = at
        self._budget = budget

    def read(self, n: int) -> bytes:
        if self._budget <= 0:
            raise TooLarge
        sock = self._sock
        if self._at is not None:
            left = self._at - time.monotonic()
            if left <= 0:
                raise Broken(TimeoutError())
            sock.settimeout(left)
        try:
            data = sock.recv(max(1, min(n, CHUNK, self._budget)))
        except OSError as error:
            raise Broken(error) from error
        if not data:
            raise Broken(None)
        self._budget -= len(data)
        return data

    def is_open(self) -> bool:
        return True


class ThriftEndpoint(EndpointBase):
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

    __slots__ = ("_address",)

    def __init__(self, instance: str, options: Options) -> None:
        super().__init__(instance, options)
        host, port = split_instance(self.instance)
        self._address = (host.strip("[]"), port)

    def __call__(self, request: Any) -> Any:
        seqid, message, deadline = self._encode(request)
        while True:
            sock, reused = self._take(deadline)
            with self._closed_if_raised(sock):
                error = _send(sock, message, deadline)
            if self._sent(sock, error, reused=reused, deadline=deadline):
                break
        with self._reading(sock, deadline):
            outcome = None if self._call.oneway else _receive(sock, self._call, deadline, seqid)
        return self._finish(sock, outcome)

    # -- connections ---------------------------------------------------------------

    def _take(self, deadline: Deadline) -> tuple[socket.socket, bool]:
        sock = self._pooled()
        return (sock, True) if sock is not None else (self._connect(deadline), False)

    def _connect(self, deadline: Deadline) -> socket.socket:
        wait, bound, by_connect = self._connect_wait(deadline)
        name = self._call.name
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

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sd.thrift endpoint {self._call.name} on {self.instance}>"


def _receive(sock: socket.socket, call: Call, deadline: Deadline, seqid: int) -> Outcome:
    """Read and decode the reply by the deadline (errors: see
    :meth:`EndpointBase._reply_failure`)."""
    if not call.framed:
        reader = _SocketReader(sock, deadline.at, call.max_reply_size)
        return call.read_reply(call.protocol(BufferedTransport(reader)), seqid)
    frame = call.frame_reader()
    at = deadline.at
    while True:
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise Broken(TimeoutError())
            sock.settimeout(left)
        try:
            data = sock.recv(min(max(frame.missing, CHUNK), MAX_CHUNK))
        except OSError as error:
            raise Broken(error) from error
        outcome = fed(call, frame, data, seqid)
        if outcome is not None:
            return outcome


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
