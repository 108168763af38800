"""kitsd.auth credentials as gRPC call credentials (extra ``grpc``), for ``sd.grpc``.

gRPC attaches call credentials on secure channels only (TLS, or
``grpc.local_channel_credentials()`` on loopback and Unix sockets)::

    credentials = kitsd.auth.grpc_channel_credentials(signer, grpc.ssl_channel_credentials(ca))
    factory = sd.grpc.factory("/users.Users/Get", ..., credentials=credentials)

gRPC calls the credential for every call, on a thread of its own (for ``grpc``
and ``grpc.aio`` channels alike), so the credential must be a sync one
(:class:`JWTSigner`, :class:`ClientCredentials`, :class:`BasicAuth`).  A failure
to get a token fails the call with the credential's error message, which never
holds a secret.

A call refused ``UNAUTHENTICATED`` (a token revoked before its expiry, a key
rotated) is the gRPC twin of an HTTP 401: through ``sd.grpc`` it is sent once
more with a fresh token, as :class:`HeaderAuth`'s ``httpx.Auth`` flow does, and a
second ``UNAUTHENTICATED`` is the answer.  For that the credential must know
which token each call sent, which channel-wide call credentials cannot tell (gRPC
asks them on its own threads, with nothing naming the call): the channel
credentials of :func:`grpc_channel_credentials` carry a :class:`_CallAuth`
(attribute ``_kitsd_call_auth``) with which ``sd.grpc`` opens its channels
*without* the call credentials and gives each call credentials of its own that
record the token they sent.  Only that token is dropped (only if still cached),
so 200 calls refused at once cause one token request.  Used anywhere else, the
channel credentials send the token on every call as before (no retry).
"""

from __future__ import annotations

import logging
from typing import Any

from kitsd.auth._errors import AuthError
from kitsd.auth._header import HeaderAuth

__all__ = ["grpc_channel_credentials", "grpc_credentials"]

logger = logging.getLogger(__name__)


def _grpc() -> Any:
    try:
        import grpc
    except ImportError as error:
        raise ImportError(f"gRPC credentials need grpcio: pip install 'kitsd[grpc]' ({error})",
                          name="grpc") from error
    return grpc


def _answer(auth: HeaderAuth, callback: Any, metadata: Any) -> bool:
    """Answer gRPC's plugin ``callback`` with ``metadata()``; whether it succeeded."""
    try:
        value = metadata()
    except AuthError as error:  # its message holds no secret
        callback((), error)
        return False
    except Exception as error:  # noqa: BLE001 - gRPC's plugin must answer, never raise
        # another error's message might hold a secret: name its type only
        callback((), AuthError(f"{auth!r}: {type(error).__name__}"))
        return False
    callback(value, None)
    return True


class _Plugin:
    """A ``grpc.AuthMetadataPlugin``: the credential's metadata for each call."""

    __slots__ = ("_auth",)

    def __init__(self, auth: HeaderAuth) -> None:
        self._auth = auth

    def __call__(self, context: Any, callback: Any) -> None:
        _answer(self._auth, callback, self._auth.grpc_metadata)


class _Sent:
    """The token one call's credentials sent (``None`` until they ran or when they
    failed); ``repr()`` never shows it."""

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token: str | None = None

    def __repr__(self) -> str:
        return f"<_Sent {'a token' if self.token is not None else 'nothing'}>"


class _CallPlugin:
    """A ``grpc.AuthMetadataPlugin`` for one call: the metadata, and the token in
    :class:`_Sent` (gRPC asks the plugin before sending, so the call's end sees it)."""

    __slots__ = ("_auth", "_sent")

    def __init__(self, auth: HeaderAuth, sent: _Sent) -> None:
        self._auth, self._sent = auth, sent

    def __call__(self, context: Any, callback: Any) -> None:
        auth, sent = self._auth, self._sent

        def metadata() -> tuple[tuple[str, str], ...]:
            token = auth.token()
            sent.token = token
            return (("authorization", auth.authorization(token)),)

        _answer(auth, callback, metadata)


class _CallAuth:
    """What ``sd.grpc`` needs to retry a call refused ``UNAUTHENTICATED`` once with a
    fresh token (see the module docstring): ``channel``, the channel credentials
    without the call credentials; :meth:`attempt` call credentials for one call;
    :meth:`refused`.  Thread-safe (the credential is)."""

    __slots__ = ("_auth", "_grpc", "channel")

    def __init__(self, auth: HeaderAuth, channel: Any) -> None:
        self._auth = auth
        self._grpc = _grpc()
        self.channel = channel

    def attempt(self) -> tuple[Any, _Sent]:
        """``(grpc.CallCredentials, _Sent)`` for one call."""
        sent = _Sent()
        return self._grpc.metadata_call_credentials(_CallPlugin(self._auth, sent),
                                                    name=type(self._auth).__name__), sent

    def refused(self, error: Any, sent: _Sent) -> bool:
        """Whether the call that ended with ``error`` (a ``grpc.RpcError``) is sent
        once more: it was refused ``UNAUTHENTICATED`` with the token in ``sent``,
        which is dropped (only if it is still the cached one: one token request
        for any number of calls refused at once)."""
        code = getattr(error, "code", None)
        if not callable(code) or code() != self._grpc.StatusCode.UNAUTHENTICATED:
            return False
        if sent.token is None:
            return False
        self._auth.invalidate(sent.token)
        logger.debug("%r: a call was refused UNAUTHENTICATED; sending it once more with a "
                     "fresh token", self._auth)
        return True

    def __repr__(self) -> str:
        return f"<_CallAuth {self._auth!r}>"


def grpc_credentials(auth: HeaderAuth) -> Any:
    """``grpc.CallCredentials`` that send ``auth`` (``authorization: <scheme> <token>``)
    with every call.  Raises ``TypeError`` for a credential that is not a kitsd.auth one
    or is asynchronous only."""
    if not isinstance(auth, HeaderAuth):
        raise TypeError(f"auth must be a kitsd.auth credential, not {type(auth).__name__}")
    if type(auth).token is HeaderAuth.token:
        raise TypeError(f"{type(auth).__name__} is asynchronous; gRPC calls credentials from "
                        "its own threads: use the sync credential (ClientCredentials)")
    grpc = _grpc()
    return grpc.metadata_call_credentials(_Plugin(auth), name=type(auth).__name__)


def grpc_channel_credentials(auth: HeaderAuth, channel: Any = None) -> Any:
    """``channel`` credentials (default: ``grpc.ssl_channel_credentials()``) composed
    with :func:`grpc_credentials`, for ``sd.grpc.factory(..., credentials=...)``.

    Through ``sd.grpc``, a call refused ``UNAUTHENTICATED`` is sent once more with a
    fresh token (not for :class:`BasicAuth`, whose credential cannot change); the
    refused token is dropped for every caller, with one token request however many
    calls were refused at once (see the module docstring)."""
    grpc = _grpc()
    if channel is not None and not isinstance(channel, grpc.ChannelCredentials):
        raise TypeError(f"channel must be grpc.ChannelCredentials or None, not "
                        f"{type(channel).__name__}")
    base = channel if channel is not None else grpc.ssl_channel_credentials()
    composite = grpc.composite_channel_credentials(base, grpc_credentials(auth))
    if auth.retry_unauthorized:
        composite._kitsd_call_auth = _CallAuth(auth, base)
    return composite
