"""gRPC status errors, mapped at the boundary: what lb's retry and ejection see."""

from __future__ import annotations

from typing import Any

from kitsd.core.errors import ConnectionFailure, KitsdError

__all__ = [
    "ConnectTimeoutError",
    "DeadlineExceededError",
    "GRPCStatusError",
    "UnavailableError",
    "from_rpc_error",
]


class GRPCStatusError(KitsdError):
    """An instance answered a gRPC call with a non-OK status.

    ``.code`` (a ``grpc.StatusCode``), ``.details`` (the server's message),
    ``.instance``, ``.method``.  ``str()`` reads
    ``gRPC INVALID_ARGUMENT from 10.0.0.7:50051 (/pkg.Svc/Method): details``.
    The grpcio error is chained as ``__cause__``.
    """

    def __init__(self, code: Any, details: str | None, instance: str, method: str) -> None:
        name = getattr(code, "name", str(code))
        text = f"gRPC {name} from {instance} ({method})"
        super().__init__(f"{text}: {details}" if details else text)
        self.code = code
        self.details = details
        self.instance = instance
        self.method = method


class UnavailableError(GRPCStatusError, ConnectionFailure):
    """``UNAVAILABLE``: the instance could not be reached (or is going away).  A
    :class:`kitsd.core.errors.ConnectionFailure`, so the retry loop ejects the instance."""


class DeadlineExceededError(GRPCStatusError, TimeoutError):
    """``DEADLINE_EXCEEDED``: the call ran out of time (a ``TimeoutError``; counted by
    ``lb.OutlierDetection(consecutive_errors=...)``)."""


class ConnectTimeoutError(DeadlineExceededError, ConnectionFailure):
    """``DEADLINE_EXCEEDED`` before the channel had a connection to the instance (it
    accepts TCP but never completes the HTTP/2 handshake, say): nothing was sent.  A
    :class:`kitsd.core.errors.ConnectionFailure`, so the retry loop ejects the instance
    at once and tries another, as for ``UNAVAILABLE``."""


def from_rpc_error(
    error: Any, instance: str, method: str, *, connected: bool | None = None
) -> GRPCStatusError:
    """The kitsd error for a ``grpc.RpcError`` (a ``grpc.Call``) from ``instance``;
    ``connected``: whether the channel was connected when the call ended (``None``:
    unknown), which tells a deadline spent connecting from one spent waiting."""
    import grpc  # the extra; imported here so this module stays importable without it

    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    kind: type[GRPCStatusError] = GRPCStatusError
    if code == grpc.StatusCode.UNAVAILABLE:
        kind = UnavailableError
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        kind = ConnectTimeoutError if connected is False else DeadlineExceededError
    return kind(code, details, instance, method)
