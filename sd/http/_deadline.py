"""Network backends that cap every socket wait at the retry deadline.

httpx's timeouts bound each phase of a request (connect, each read, each write),
not the whole exchange: a server trickling its body one byte per second keeps a
request alive for as long as it likes, each read well inside the read timeout.
The fix sits where the waiting happens.  httpcore, under httpx, does all its
network I/O through a small public interface (``httpcore.NetworkBackend`` /
``NetworkStream`` and their async twins).  :class:`DeadlineBackend` wraps the
default backend: before each connect, read or write it reads the deadline of the
current retry attempt (:func:`kitsd.core.deadline.current_deadline`, a context variable;
httpcore does its I/O in the caller's thread or task, so the variable is the
caller's) and shortens the wait to the time left, or raises httpcore's timeout
for that phase when none is left.  Outside a retry it passes everything through.

The only vendor internal: ``httpx.HTTPTransport`` takes no ``network_backend``
argument, although the httpcore pool it builds does.  :func:`install` swaps the
pool's backend after construction (``transport._pool._network_backend``), before
any connection exists.  If httpx's layout changes it logs a warning once and
leaves the transport as it is (then only the per-phase caps bound a request);
``tests/sd/test_http_deadline.py`` fails loudly on such a change.
"""

from kitsd.sd.http._async.deadline import AsyncDeadlineBackend, AsyncDeadlineStream, install_async
from kitsd.sd.http._sync.deadline import DeadlineBackend, DeadlineStream, install

__all__ = [
    "AsyncDeadlineBackend",
    "AsyncDeadlineStream",
    "DeadlineBackend",
    "DeadlineStream",
    "install",
    "install_async",
]
