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
"""

from __future__ import annotations

from typing import Any

from kitsd.auth._errors import AuthError
from kitsd.auth._header import HeaderAuth

__all__ = ["grpc_channel_credentials", "grpc_credentials"]


def _grpc() -> Any:
    try:
        import grpc
    except ImportError as error:
        raise ImportError(f"gRPC credentials need grpcio: pip install 'kitsd[grpc]' ({error})",
                          name="grpc") from error
    return grpc


class _Plugin:
    """A ``grpc.AuthMetadataPlugin``: the credential's metadata for each call."""

    __slots__ = ("_auth",)

    def __init__(self, auth: HeaderAuth) -> None:
        self._auth = auth

    def __call__(self, context: Any, callback: Any) -> None:
        try:
            metadata = self._auth.grpc_metadata()
        except AuthError as error:  # its message holds no secret
            callback((), error)
            return
        except Exception as error:  # noqa: BLE001 - gRPC's plugin must answer, never raise
            # another error's message might hold a secret: name its type only
            callback((), AuthError(f"{self._auth!r}: {type(error).__name__}"))
            return
        callback(metadata, None)


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
    with :func:`grpc_credentials`, for ``sd.grpc.factory(..., credentials=...)``."""
    grpc = _grpc()
    if channel is not None and not isinstance(channel, grpc.ChannelCredentials):
        raise TypeError(f"channel must be grpc.ChannelCredentials or None, not "
                        f"{type(channel).__name__}")
    base = channel if channel is not None else grpc.ssl_channel_credentials()
    return grpc.composite_channel_credentials(base, grpc_credentials(auth))
