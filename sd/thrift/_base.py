"""What both Thrift endpoint kinds share: the constructor, the pool bookkeeping
under the endpoint's lock, the request's encoding and deadline, what a failed
write or a failed reply becomes, and closing (:class:`EndpointBase`).

The drivers (:mod:`sd.thrift._sync` on blocking sockets, :mod:`sd.thrift._async`
on the running loop's ``sock_*`` methods) keep only the waiting: connecting,
writing and reading.  They are written by hand, not generated from each other:
the sync one bounds each wait with the socket's own timeout, the asyncio one
with ``asyncio.timeout`` around a whole phase and a reader that yields to the loop.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kitsd.core.deadline import current_deadline
from kitsd.sd.instance import normalize_instance
from kitsd.sd.thrift._codec import BadReply, Call, FrameReader, Outcome, undecodable
from kitsd.sd.thrift._errors import ThriftConnectError, ThriftError, ThriftProtocolError, failure
from kitsd.sd.thrift._options import Deadline, Options
from kitsd.sd.thrift._pool import Pool, PoolClosed

__all__ = ["CHUNK", "MAX_CHUNK", "Broken", "EndpointBase", "TooLarge", "fed", "usable"]

#: Bytes asked of one ``recv`` (a frame's missing part, at least this, at most MAX_CHUNK).
CHUNK = 65536
MAX_CHUNK = 1 << 20
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


class Broken(Exception):
    """The connection failed while reading the reply: ``error`` (``None``: the end
    of the stream; a ``TimeoutError``: the deadline)."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error


class TooLarge(Exception):
    """The reply outgrows ``max_frame_size``."""


def fed(call: Call, frame: FrameReader, data: bytes, seqid: int) -> Outcome | None:
    """Feed one ``recv``'s bytes to ``frame``: the decoded reply once the frame is
    whole, else ``None``.  Raises :class:`Broken` at the end of the stream (no
    bytes), :class:`BadReply` for a bad frame or reply."""
    if not data:
        raise Broken(None)
    payload = frame.feed(data)
    return None if payload is None else call.decode(payload, seqid)


class EndpointBase:
    """The I/O-free half of :class:`~sd.thrift.ThriftEndpoint` and
    :class:`~sd.thrift.AsyncThriftEndpoint` (not public)."""

    __slots__ = ("_call", "_lock", "_options", "_pool", "_seqids", "instance")

    def __init__(self, instance: str, options: Options) -> None:
        self.instance = normalize_instance(instance)
        self._options = options
        self._call = options.call
        self._pool: Pool[socket.socket] = Pool(options.max_idle, options.idle_timeout)
        self._lock = threading.Lock()
        self._seqids = itertools.count(1)

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pool (for inspection)."""
        return len(self._pool)

    def _encode(self, request: Any) -> tuple[int, bytes, Deadline]:
        """The call's sequence id, its message and its deadline (nothing is sent:
        a request that does not fit the method raises here)."""
        call = self._call
        arguments = call.arguments(request)
        seqid = next(self._seqids) & _SEQIDS
        deadline = self._options.deadline(current_deadline(), time.monotonic())
        return seqid, call.encode(arguments, seqid), deadline

    def _pooled(self) -> socket.socket | None:
        """An idle connection that can carry a call (expired and unusable ones are
        closed on the way); ``None``: connect a new one.  Raises
        :class:`ThriftConnectError` once closed."""
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
            if sock is None or usable(sock):
                return sock
            sock.close()

    def _connect_wait(self, deadline: Deadline) -> tuple[float | None, str, bool]:
        """:meth:`Options.connect_wait` now; raises the connect timeout when no time is
        left."""
        wait, bound, by_connect = self._options.connect_wait(deadline, time.monotonic())
        if wait is not None and wait <= 0:
            raise failure(self.instance, self._call.name, "connect", TimeoutError(),
                          bound=bound, connect_timeout=by_connect)
        return wait, bound, by_connect

    @staticmethod
    @contextmanager
    def _closed_if_raised(sock: socket.socket) -> Iterator[None]:
        """Close ``sock`` when the block raises anything (a KeyboardInterrupt or a
        cancellation mid-write: never leak the socket)."""
        try:
            yield
        except BaseException:
            sock.close()
            raise

    def _sent(self, sock: socket.socket, error: OSError | None, *, reused: bool,
              deadline: Deadline) -> bool:
        """Whether the write on ``sock`` succeeded (``error`` is ``None``).  When it
        failed: close ``sock``; raise the failure unless ``sock`` was pooled and the
        deadline is not the cause (the request provably did not leave: the caller
        tries a new connection, and gets ``False``)."""
        if error is None:
            return True
        sock.close()
        if not reused or isinstance(error, TimeoutError):
            raise failure(self.instance, self._call.name, "write", error,
                          bound=deadline.what) from error
        return False

    @contextmanager
    def _reading(self, sock: socket.socket, deadline: Deadline) -> Iterator[None]:
        """Around reading the reply on ``sock``: any error closes it, and one that is
        not already one of :mod:`sd.thrift`'s is mapped by :meth:`_reply_failure`."""
        try:
            yield
        except ThriftError:
            sock.close()
            raise
        except Exception as error:  # noqa: BLE001 - mapped to sd.thrift's errors, chained
            sock.close()
            mapped, cause = self._reply_failure(error, deadline)
            raise mapped from cause
        except BaseException:
            sock.close()
            raise

    def _finish(self, sock: socket.socket, outcome: Outcome | None) -> Any:
        """Give ``sock`` back to the pool; the call's result (``None``: a oneway call)."""
        self._give(sock)
        return None if outcome is None else self._call.unwrap(outcome, self.instance)

    def _give(self, sock: socket.socket) -> None:
        with self._lock:
            extra = self._pool.give(sock, time.monotonic())
        if extra is not None:
            extra.close()

    def _reply_failure(self, error: Exception,
                       deadline: Deadline) -> tuple[Exception, BaseException | None]:
        """What reading the reply failing with ``error`` raises, and its cause."""
        call = self._call
        if isinstance(error, Broken):
            return failure(self.instance, call.name, "read", error.error,
                           bound=deadline.what), error.error
        if isinstance(error, OSError):  # TimeoutError included
            return failure(self.instance, call.name, "read", error, bound=deadline.what), error
        if isinstance(error, TooLarge):
            return self._bad(f"a reply larger than max_frame_size ({call.max_reply_size} "
                             "bytes)"), None
        if isinstance(error, BadReply):
            return self._bad(str(error)), error.__cause__
        return self._bad(undecodable(error)), error

    def _bad(self, what: str) -> ThriftProtocolError:
        return ThriftProtocolError(self.instance, self._call.name, f"received {what}")

    def close(self) -> None:
        """Close the idle connections now and the others as their calls end.
        Idempotent; never waits for a call (and needs no event loop)."""
        with self._lock:
            idle = self._pool.close()
        for sock in idle:
            sock.close()
