"""HTTP endpoints on httpx: one client per instance, bounded by the retry deadline.

:func:`factory` and :func:`async_factory` return ``factory(instance) -> endpoint``
for :class:`sd.Endpointer`.  Each endpoint has its own httpx client whose
``base_url`` is ``http://<instance>`` (or ``https``), so connections to that
instance are pooled and kept alive between calls, and closed with the endpoint.
The client is made by the endpoint's first call; what can be shared across
instances (the TLS context, limits, transport settings, the checked arguments)
is built once per factory, so ten thousand endpoints cost a few MiB, not GiB,
and making one loads no certificate.

A call runs ``encode(request)`` to get httpx request arguments (``json=``,
``params=``, ``headers=``, ``content=``, ...), sends ``method path`` with them,
reads the whole body, and then:

* a 2xx status, or one that ``accept_status`` accepts, goes to
  ``decode(response)``, whose result (or error) is the call's;
* any other status raises :class:`StatusError`, so ``lb.retry`` and breakers
  see the failure.

Deadlines.  Inside an attempt made by ``lb.retry`` / ``lb.retry_async``,
:func:`kitsd.core.deadline.remaining` gives the seconds left, and the whole request is
bounded by it: each of httpx's timeout phases (connect, read, write, pool) is
capped by it, and every socket wait under them (each read of a body a server
trickles byte by byte) ends by the deadline.  When the deadline passes, the
request is abandoned, its connection closed, and the call raises
``TimeoutError`` chained from httpx's timeout error; with no time left at all it
raises ``TimeoutError`` without sending anything.  A timeout that the
configured (shorter) timeout caused stays httpx's.  Outside a retry the
client's configured timeout applies unchanged.  (With your own ``transport`` in
``client_kwargs``, or through a proxy, only the per-phase caps apply.)

Connection failures.  ``httpx.ConnectError`` and ``httpx.ConnectTimeout`` leave
an endpoint as :class:`ConnectError` / :class:`ConnectTimeout`: subclasses of
httpx's (``except httpx.ConnectError`` still catches them) that carry the
:class:`kitsd.core.errors.ConnectionFailure` marker: the request never reached
the instance, so the retry loop may eject it at once.  Importing this module
changes nothing about httpx's own classes.  Read/write timeouts and
``httpx.RemoteProtocolError`` are *not* connection failures: the server may have
received, even processed, the request.  A deadline's ``TimeoutError`` says
nothing about the instance and is not one either.  All other httpx errors pass
through unchanged.

Modules: ``_spec`` (the I/O-free steps around sending), ``_clients`` (client
settings built once per factory), ``_deadline`` (network backends that end
socket waits by the deadline), ``_endpoint`` (the two endpoints and factories).
"""

from __future__ import annotations

from kitsd.sd.http._endpoint import AsyncHTTPEndpoint, HTTPEndpoint, async_factory, factory
from kitsd.sd.http._spec import AcceptStatus as AcceptStatus  # for annotations; not in __all__
from kitsd.sd.http._spec import ConnectError, ConnectTimeout, StatusError

__all__ = [
    "AsyncHTTPEndpoint",
    "ConnectError",
    "ConnectTimeout",
    "HTTPEndpoint",
    "StatusError",
    "async_factory",
    "factory",
]

# Tracebacks and reprs name the public path users import from, not the private module.
for _public in (AsyncHTTPEndpoint, ConnectError, ConnectTimeout, HTTPEndpoint, StatusError,
                async_factory, factory):
    _public.__module__ = __name__
del _public
