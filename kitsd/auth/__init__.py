"""Authentication for calls through kitsd: what a client needs to call services
that check identity (go-kit's ``auth/jwt`` and ``auth/basic``, client side, and
OAuth2 client credentials).

Every credential is an ``httpx.Auth`` -- for ``httpx.Client(auth=...)`` over
:class:`kitsd.Transport`, and ``sd.http`` endpoints (``client_kwargs={"auth": ...}``)
-- and gives gRPC call credentials for ``sd.grpc`` (:func:`grpc_credentials`):

- :class:`JWTSigner` — signs JWTs (HS*/RS*/PS*/ES*/EdDSA, on PyJWT: extra ``auth``),
  per call or cached until shortly before expiry.
- :class:`ClientCredentials` / :class:`AsyncClientCredentials` — OAuth2 client
  credentials: one token shared by every call and instance, refreshed before it
  expires with one request however many callers (single flight); a 401 is retried
  once with a fresh token.
- :class:`BasicAuth` — HTTP Basic.
- :class:`MTLSTransport` / :class:`AsyncMTLSTransport` — per-instance client
  certificates for https instances (an inner transport for :class:`kitsd.Transport`
  or an ``sd.http`` client).
- Errors: :class:`AuthError`, :class:`TokenError`, :class:`TokenEndpointError`.

No token, secret or key ever appears in a message, a log line or a ``repr()``.
Modules: ``_token`` (the pure refresh rules), ``_source`` (single-flight drivers),
``_exchange`` (the pure OAuth2 exchange), ``_header``, ``_jwt``, ``_oauth2``,
``_basic``, ``_grpc``, ``_mtls``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kitsd.auth._basic import BasicAuth
from kitsd.auth._errors import AuthError, TokenEndpointError, TokenError
from kitsd.auth._grpc import grpc_channel_credentials, grpc_credentials
from kitsd.auth._header import HeaderAuth
from kitsd.auth._mtls import AsyncMTLSTransport, MTLSTransport
from kitsd.auth._oauth2 import AsyncClientCredentials, ClientCredentials

if TYPE_CHECKING:
    from kitsd.auth._jwt import JWTSigner as JWTSigner

__all__ = [
    "AsyncClientCredentials",
    "AsyncMTLSTransport",
    "AuthError",
    "BasicAuth",
    "ClientCredentials",
    "HeaderAuth",
    "JWTSigner",
    "MTLSTransport",
    "TokenEndpointError",
    "TokenError",
    "grpc_channel_credentials",
    "grpc_credentials",
]


for _public in (AsyncClientCredentials, AsyncMTLSTransport, AuthError, BasicAuth,
                ClientCredentials, HeaderAuth, MTLSTransport, TokenEndpointError, TokenError,
                grpc_channel_credentials, grpc_credentials):
    _public.__module__ = __name__
del _public


def __getattr__(name: str) -> Any:
    if name == "JWTSigner":  # PyJWT is imported only by those who sign
        return importlib.import_module("kitsd.auth._jwt").JWTSigner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
