"""gRPC endpoints on grpcio (extra ``grpc``): Consul, etcd or any instancer's
instances as unary calls, balanced and retried by :mod:`lb`.

Python's grpcio has no pluggable resolver or balancer; this gives each instance
its own channel and lets :func:`lb.retry` / :func:`lb.retry_async` pick::

    endpointer = sd.Endpointer(instancer, sd.grpc.factory("/users.Users/Get",
                                                          encode_request, decode_reply))
    get_user = lb.retry(3, 2.0, lb.LeastLoaded(endpointer))
    reply = get_user(request)

- :func:`factory` / :func:`async_factory` — ``factory(instance) -> endpoint``.
- :class:`GRPCStatusError` (``.code``, ``.details``, ``.instance``);
  :class:`UnavailableError` (a :class:`kitsd.core.errors.ConnectionFailure`: ejected and
  retried at once), :class:`DeadlineExceededError` (a ``TimeoutError``), and
  :class:`ConnectTimeoutError` (a deadline spent waiting for a connection that never
  came: a connection failure too, nothing was sent).

Modules: ``_errors`` (status mapping), ``_endpoint`` (endpoints and factories).
"""

from __future__ import annotations

try:
    import grpc  # noqa: F401 - checked here so the error says which extra to install
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"sd.grpc needs grpcio: pip install 'kitsd[grpc]' ({error})", name="grpc") from error

from kitsd.sd.grpc._endpoint import AsyncGRPCEndpoint, GRPCEndpoint, async_factory, factory
from kitsd.sd.grpc._errors import (
    ConnectTimeoutError,
    DeadlineExceededError,
    GRPCStatusError,
    UnavailableError,
)

__all__ = [
    "AsyncGRPCEndpoint",
    "ConnectTimeoutError",
    "DeadlineExceededError",
    "GRPCEndpoint",
    "GRPCStatusError",
    "UnavailableError",
    "async_factory",
    "factory",
]

for _public in (AsyncGRPCEndpoint, ConnectTimeoutError, DeadlineExceededError, GRPCEndpoint,
                GRPCStatusError, UnavailableError, async_factory, factory):
    _public.__module__ = __name__
del _public
