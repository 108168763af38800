"""Thrift endpoints on thriftpy2 (extra ``thrift``): any instancer's instances as
calls of one method of a Thrift service, balanced and retried by :mod:`lb`::

    store = thriftpy2.load("store.thrift", module_name="store_thrift")
    endpointer = sd.Endpointer(instancer, sd.thrift.factory(store.Store, "get"))
    get = lb.retry(3, 1.0, lb.RoundRobin(endpointer))
    item = get({"key": "a"})

- :func:`factory` / :func:`async_factory` — ``factory(instance) -> endpoint``, one
  connection pool per instance; framed or buffered transport, binary or compact
  protocol; the retry's deadline (:func:`lb.remaining`) bounds connect and every
  read and write.
- Errors (tree in :mod:`sd.thrift._errors`): :class:`ThriftConnectError` (a
  ``ConnectionFailure``: the request was provably not sent),
  :class:`ThriftConnectTimeout`, :class:`ThriftTimeout` (a ``TimeoutError``),
  :class:`ThriftConnectionLost`, :class:`ThriftProtocolError`,
  :class:`ThriftApplicationError`; declared service exceptions reach the caller
  untouched.

Why thriftpy2 rather than Apache Thrift's Python library: it loads the IDL at run
time (no code generation step in the user's build), ships Cython encoders for the
binary protocol and its buffered transport, and has asyncio protocols; Apache's
library needs generated code and has no asyncio client.  kitsd uses thriftpy2 for
the bytes only (encoding, decoding); connections, pooling, deadlines and error
mapping are kitsd's, one implementation with two thin drivers.

Modules: ``_codec`` (the I/O-free call: request bytes, frames, reply meaning),
``_pool`` (the pool's decisions), ``_errors`` (the error tree and the failure
rules), ``_options``, ``_sync`` and ``_async`` (the drivers), ``_factory``.
"""

from __future__ import annotations

try:
    import thriftpy2  # noqa: F401 - checked here so the error says which extra to install
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"sd.thrift needs thriftpy2: pip install 'kitsd[thrift]' ({error})",
        name="thriftpy2") from error

from kitsd.sd.thrift._async import AsyncThriftEndpoint
from kitsd.sd.thrift._errors import (
    ThriftApplicationError,
    ThriftConnectError,
    ThriftConnectionLost,
    ThriftConnectTimeout,
    ThriftError,
    ThriftProtocolError,
    ThriftTimeout,
)
from kitsd.sd.thrift._factory import DEFAULT_MAX_FRAME_SIZE, async_factory, factory
from kitsd.sd.thrift._sync import ThriftEndpoint

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "AsyncThriftEndpoint",
    "ThriftApplicationError",
    "ThriftConnectError",
    "ThriftConnectTimeout",
    "ThriftConnectionLost",
    "ThriftEndpoint",
    "ThriftError",
    "ThriftProtocolError",
    "ThriftTimeout",
    "async_factory",
    "factory",
]

for _public in (AsyncThriftEndpoint, ThriftApplicationError, ThriftConnectError,
                ThriftConnectTimeout, ThriftConnectionLost, ThriftEndpoint, ThriftError,
                ThriftProtocolError, ThriftTimeout, async_factory, factory):
    _public.__module__ = __name__
del _public
