"""The factories: ``factory(instance) -> endpoint`` for :class:`sd.Endpointer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

from kitsd.core import validate
from kitsd.sd.thrift._async import AsyncThriftEndpoint
from kitsd.sd.thrift._options import DEFAULT_MAX_FRAME_SIZE, FactoryOptions, Options
from kitsd.sd.thrift._sync import ThriftEndpoint

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "async_factory", "factory"]


def factory(service: Any, method: str,
            **options: Unpack[FactoryOptions]) -> Callable[[str], ThriftEndpoint]:
    """``factory(instance) -> endpoint`` calling ``method`` of the Thrift ``service``.

    ``service`` is a thriftpy2 service (``thriftpy2.load("store.thrift").Store``);
    ``method`` one of its method names.  Each instance gets its own connection pool
    (:class:`ThriftEndpoint`), closed when the instance leaves the Endpointer.

    A request is a mapping of argument names to values (``{"key": "a"}``), a tuple
    of the arguments in IDL order, ``None`` for none, or the method's argument
    struct; the endpoint returns the method's result.

    * ``transport``: ``"buffered"`` (the default: thriftpy2's and most servers') or
      ``"framed"`` (each message behind its 4-byte length; what non-blocking
      servers need); ``protocol``: ``"binary"`` (the default) or ``"compact"``.
      Both must match the server's.
    * ``timeout``: seconds for a whole call outside a retry (``None``: no limit);
      inside :func:`lb.retry` / :func:`lb.retry_async` the retry's deadline
      (:func:`lb.remaining`) bounds the call, the earlier of the two when both are
      set.  ``connect_timeout``: at most this long to connect (then the instance
      counts as unreachable: :class:`ThriftConnectTimeout`).
    * ``max_idle`` (16) connections are kept per instance for reuse, each at most
      ``idle_timeout`` (60) seconds (``None``: for ever).  Each call in flight uses a
      connection of its own; bound concurrency upstream if the server must not
      see more connections than that.
    * ``max_frame_size``: the largest reply accepted, in bytes (framed or not; 16 MB);
      a larger one is a :class:`ThriftProtocolError`, refused before it is read.

    Raises ``TypeError`` / :class:`kitsd.core.errors.MisuseError` (naming the
    argument) for bad arguments; the returned factory raises
    :class:`kitsd.core.errors.InvalidInstanceError` for a bad instance string.
    Host names are resolved by each new connection, outside the deadline's reach
    in the sync driver (``socket.create_connection``): prefer addresses.
    """
    validate.keywords("sd.thrift.factory", options, FactoryOptions)
    checked = Options(service, method, **options)

    def make_endpoint(instance: str) -> ThriftEndpoint:
        return ThriftEndpoint(instance, checked)

    return make_endpoint


def async_factory(service: Any, method: str,
                  **options: Unpack[FactoryOptions]) -> Callable[[str], AsyncThriftEndpoint]:
    """The asyncio twin of :func:`factory` (same arguments): each instance gets an
    :class:`AsyncThriftEndpoint`."""
    validate.keywords("sd.thrift.async_factory", options, FactoryOptions)
    checked = Options(service, method, **options)

    def make_endpoint(instance: str) -> AsyncThriftEndpoint:
        return AsyncThriftEndpoint(instance, checked)

    return make_endpoint
