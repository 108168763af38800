"""gRPC endpoints: one grpcio channel per instance, a unary call as the endpoint.

Each call (each attempt of a retry) has a deadline: the factory's ``timeout``,
never past :func:`kitsd.core.deadline.remaining` (the enclosing retry's time left),
so one attempt on a silent instance cannot use up the whole retry; with no time
left it raises ``TimeoutError`` without sending.  Status errors are mapped by
:mod:`sd.grpc._errors`: ``UNAVAILABLE`` is a connection failure (ejection,
retry), ``DEADLINE_EXCEEDED`` a ``TimeoutError`` -- a
:class:`ConnectTimeoutError` (a connection failure too: nothing was sent) when
the channel never got connected to the instance -- and every other code a
:class:`GRPCStatusError` naming the code and the instance.

``credentials`` from :func:`kitsd.auth.grpc_channel_credentials` carry a
``_kitsd_call_auth`` (duck-typed here: sd does not import kitsd.auth): the channel
is opened with its channel credentials alone, each call gets call credentials of
its own that record the token they sent, and a call refused ``UNAUTHENTICATED`` is
sent once more with a fresh token (the refused one dropped for every caller); a
second ``UNAUTHENTICATED`` is the answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from kitsd.core import validate
from kitsd.core.deadline import remaining
from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.grpc._errors import from_rpc_error
from kitsd.sd.instance import normalize_instance

__all__ = ["AsyncGRPCEndpoint", "GRPCEndpoint", "async_factory", "factory"]

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]
#: ``method``: a full method path (``"/pkg.Service/Method"``), or
#: ``callable(channel) -> unary-unary multicallable`` (e.g. ``lambda ch: Stub(ch).Method``).
Method = str | Callable[[Any], Any]


class _Settings:
    """What every endpoint of one factory shares (checked once)."""

    __slots__ = ("call_auth", "channel_options", "compression", "credentials", "metadata",
                 "method", "name", "request_serializer", "response_deserializer", "timeout")

    def __init__(
        self, method: Method, request_serializer: Serializer | None,
        response_deserializer: Deserializer | None, channel_options: Sequence[tuple[str, Any]],
        credentials: Any, metadata: Sequence[tuple[str, str | bytes]] | None,
        timeout: float | None, compression: Any,
    ) -> None:
        if isinstance(method, str):
            if not method.startswith("/") or method.count("/") != 2:
                raise MisuseError(
                    f"method must be a path like '/pkg.Service/Method', got {shown_value(method)}")
            self.name = method
        elif callable(method):
            self.name = getattr(method, "__qualname__", repr(method))
        else:
            raise TypeError(f"method must be a method path or callable(channel), got {method!r}")
        for label, value in (("request_serializer", request_serializer),
                             ("response_deserializer", response_deserializer)):
            if value is not None and not callable(value):
                raise TypeError(f"{label} must be callable, got {value!r}")
        validate.optional_seconds("timeout", timeout)
        self.method = method
        self.request_serializer = request_serializer
        self.response_deserializer = response_deserializer
        self.channel_options = tuple(channel_options)
        # kitsd.auth's credentials: the channel's alone on the channel, the call's per call
        self.call_auth = getattr(credentials, "_kitsd_call_auth", None)
        self.credentials = credentials if self.call_auth is None else self.call_auth.channel
        self.metadata = tuple(metadata) if metadata is not None else None
        self.timeout = timeout
        self.compression = compression

    def deadline(self) -> float | None:
        """This attempt's timeout: ``timeout``, capped by the retry's time left."""
        left = remaining()
        if left is None:
            return self.timeout
        if left <= 0:
            raise TimeoutError("no time left for the gRPC call")
        return left if self.timeout is None else min(left, self.timeout)

    def multicallable(self, channel: Any) -> Any:
        if isinstance(self.method, str):
            return channel.unary_unary(self.method, request_serializer=self.request_serializer,
                                       response_deserializer=self.response_deserializer)
        return self.method(channel)


def _is_deadline(error: Any) -> bool:
    code = getattr(error, "code", None)
    return callable(code) and code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _connected(channel: Any) -> bool | None:
    """Whether a sync ``grpc.Channel`` is connected (READY) now; ``None`` if unknown.

    A vendor workaround, fenced here (its contract test is in ``tests/grpc``): the
    sync channel has no public state getter (only ``subscribe``, which starts two
    threads per call), so this asks grpcio's Cython channel, as ``grpc.aio``'s
    public ``get_state`` does, and gives up quietly when that is not there.
    """
    check = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    if not callable(check):
        return None
    try:
        state = check(False)
    except Exception:  # noqa: BLE001 - a closed channel, a changed vendor: unknown
        return None
    return bool(state == grpc.ChannelConnectivity.READY.value[0])


class GRPCEndpoint:
    """A unary call on ``instance`` over its own ``grpc.Channel`` (made here: grpcio
    connects lazily).  ``close()`` closes the channel; thread-safe."""

    def __init__(self, instance: str, settings: _Settings) -> None:
        self.instance = normalize_instance(instance)
        self._settings = settings
        if settings.credentials is None:
            self._channel = grpc.insecure_channel(self.instance, options=settings.channel_options)
        else:
            self._channel = grpc.secure_channel(self.instance, settings.credentials,
                                                options=settings.channel_options)
        self._call = settings.multicallable(self._channel)

    def _attempt(self, request: Any, credentials: Any) -> Any:
        settings = self._settings
        return self._call(request, timeout=settings.deadline(), metadata=settings.metadata,
                          credentials=credentials, compression=settings.compression)

    def __call__(self, request: Any) -> Any:
        call_auth = self._settings.call_auth
        try:
            if call_auth is None:
                return self._attempt(request, None)
            credentials, sent = call_auth.attempt()
            try:
                return self._attempt(request, credentials)
            except grpc.RpcError as error:
                if not call_auth.refused(error, sent):
                    raise
            credentials, _ = call_auth.attempt()
            return self._attempt(request, credentials)  # its UNAUTHENTICATED is the answer
        except grpc.RpcError as error:
            settings = self._settings
            connected = _connected(self._channel) if _is_deadline(error) else None
            raise from_rpc_error(error, self.instance, settings.name,
                                 connected=connected) from error

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"<sd.grpc endpoint {self._settings.name} on {self.instance}>"


class AsyncGRPCEndpoint:
    """The ``grpc.aio`` twin of :class:`GRPCEndpoint`.  Its channel is made by the
    first call, on the running loop (grpc.aio channels belong to one loop);
    ``aclose()`` closes it."""

    def __init__(self, instance: str, settings: _Settings) -> None:
        self.instance = normalize_instance(instance)
        self._settings = settings
        self._channel: Any = None
        self._call: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> Any:
        settings = self._settings
        with self._lock:
            if self._closed:
                raise RuntimeError(f"sd.grpc endpoint for {self.instance} is closed")
            if self._call is None:
                if settings.credentials is None:
                    channel = grpc.aio.insecure_channel(self.instance,
                                                        options=settings.channel_options)
                else:
                    channel = grpc.aio.secure_channel(self.instance, settings.credentials,
                                                      options=settings.channel_options)
                self._channel = channel
                self._call = settings.multicallable(channel)
            return self._call

    async def _attempt(self, call: Any, request: Any, credentials: Any) -> Any:
        settings = self._settings
        return await call(request, timeout=settings.deadline(), metadata=settings.metadata,
                          credentials=credentials, compression=settings.compression)

    async def __call__(self, request: Any) -> Any:
        settings = self._settings
        call = self._call or self._open()
        call_auth = settings.call_auth
        try:
            if call_auth is None:
                return await self._attempt(call, request, None)
            credentials, sent = call_auth.attempt()
            try:
                return await self._attempt(call, request, credentials)
            except grpc.RpcError as error:
                if not call_auth.refused(error, sent):
                    raise
            credentials, _ = call_auth.attempt()
            return await self._attempt(call, request, credentials)  # the answer, as it is
        except grpc.RpcError as error:
            connected = None
            channel = self._channel
            if _is_deadline(error) and channel is not None:
                connected = channel.get_state(try_to_connect=False) == \
                    grpc.ChannelConnectivity.READY
            raise from_rpc_error(error, self.instance, settings.name,
                                 connected=connected) from error

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            await channel.close()

    def __repr__(self) -> str:
        return f"<sd.grpc async endpoint {self._settings.name} on {self.instance}>"


def factory(
    method: Method,
    request_serializer: Serializer | None = None,
    response_deserializer: Deserializer | None = None,
    *,
    channel_options: Sequence[tuple[str, Any]] = (),
    credentials: Any = None,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
    timeout: float | None = None,
    compression: Any = None,
) -> Callable[[str], GRPCEndpoint]:
    """``factory(instance) -> endpoint`` for :class:`sd.Endpointer`: each instance gets
    its own channel (closed when it leaves) and ``endpoint(request)`` makes one
    unary call.

    ``method`` is a full method path (then the serializers turn requests into
    bytes and bytes into responses; ``None`` sends and returns bytes as they are)
    or ``callable(channel) -> multicallable`` for generated stubs
    (``lambda channel: UsersStub(channel).Get``).  ``credentials``: a
    ``grpc.ChannelCredentials`` for TLS (default insecure).  ``timeout``: each
    call's deadline (inside a retry: each attempt's, never past the retry's own,
    :func:`lb.remaining`); without it an attempt may use the whole time left.
    Raises ``TypeError`` / :class:`sd.MisuseError` for bad arguments; the returned
    factory raises :class:`sd.InvalidInstanceError` for a bad instance string.
    """
    settings = _Settings(method, request_serializer, response_deserializer, channel_options,
                         credentials, metadata, timeout, compression)

    def make_endpoint(instance: str) -> GRPCEndpoint:
        return GRPCEndpoint(instance, settings)

    return make_endpoint


def async_factory(
    method: Method,
    request_serializer: Serializer | None = None,
    response_deserializer: Deserializer | None = None,
    *,
    channel_options: Sequence[tuple[str, Any]] = (),
    credentials: Any = None,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
    timeout: float | None = None,
    compression: Any = None,
) -> Callable[[str], AsyncGRPCEndpoint]:
    """The ``grpc.aio`` twin of :func:`factory` (``method`` as a callable gets a
    ``grpc.aio.Channel``)."""
    settings = _Settings(method, request_serializer, response_deserializer, channel_options,
                         credentials, metadata, timeout, compression)

    def make_endpoint(instance: str) -> AsyncGRPCEndpoint:
        return AsyncGRPCEndpoint(instance, settings)

    return make_endpoint
