"""OAuth2 client credentials: :class:`ClientCredentials` and :class:`AsyncClientCredentials`.

The exchange is :mod:`kitsd.auth._exchange` (pure), the caching and single
flight :mod:`kitsd.auth._source`; these classes only send the request.  The
token request goes through an ``httpx`` client of their own, whose
``transport`` may be a :class:`kitsd.Transport`: then ``token_url`` names a
service (``http://oauth/token``) and the token endpoint is itself discovered,
balanced and retried by kitsd.

Why not Authlib's httpx integration: Authlib 1.9 deprecates plain ``httpx`` for
its ``httpx2`` fork (a warning on import), so its clients cannot take kitsd's
httpx transports for long; and its token refresh is not single-flight for
threads.  The exchange is one form POST; kitsd does it with httpx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from kitsd.auth._errors import TokenError
from kitsd.auth._exchange import AuthMethod, Exchange
from kitsd.auth._header import HeaderAuth
from kitsd.auth._source import AsyncSingleFlight, SingleFlight
from kitsd.auth._token import Token, refresh_point
from kitsd.core import validate
from kitsd.core.errors import MisuseError

__all__ = ["AsyncClientCredentials", "ClientCredentials"]

logger = logging.getLogger(__name__)


def _seconds(name: str, value: object) -> float:
    return validate.seconds(name, value, zero=True)


class _Shared(HeaderAuth):
    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | Sequence[str] | None, audience: str | None,
                 params: Mapping[str, str] | None, auth_method: AuthMethod,
                 timeout: float, leeway: float) -> None:
        self._exchange = Exchange(token_url, client_id, client_secret, scope=scope,
                                  audience=audience, params=params, auth_method=auth_method)
        self._timeout = _seconds("timeout", timeout)
        if self._timeout == 0:
            raise MisuseError("timeout must be > 0")
        self._leeway = _seconds("leeway", leeway)

    @property
    def client_id(self) -> str:
        return self._exchange.client_id

    def _token(self, started: float, response: httpx.Response) -> Token:
        value, lifetime = self._exchange.read(response.status_code, response.content)
        expires_at, refresh_at = refresh_point(started, lifetime, self._leeway)
        logger.debug("%s: got a token valid for %s", self._exchange.name,
                     "ever" if lifetime is None else f"{lifetime:g}s")
        return Token(value, expires_at, refresh_at)

    def _failed(self, error: httpx.HTTPError) -> TokenError:
        return TokenError(self._exchange.name, f"the token request failed ({type(error).__name__})")

    def __repr__(self) -> str:
        return f"<kitsd.auth.{type(self).__name__} {self._exchange.name}>"


class ClientCredentials(_Shared):
    """An OAuth2 access token from the client credentials grant, as an ``httpx.Auth``
    (``Authorization: Bearer``) and gRPC call credentials
    (:func:`kitsd.auth.grpc_credentials`).

    One token is shared by every request and every instance until shortly before it
    expires (``leeway`` seconds, at most a tenth of its lifetime); then one caller
    fetches the next while the others go on with the current one, and with no
    valid token at all the others wait for that one fetch -- one token request
    however many threads call at once.  A request answered 401 is sent once more
    with a fresh token (the refused one is dropped; 200 refusals at once still
    cause one token request).

    * ``token_url``: the token endpoint; with ``transport=kitsd.Transport(...)`` it
      may name a service (``http://oauth/token``), found through kitsd.
    * ``scope`` (a string or a sequence), ``audience``, ``params``: sent with the
      request; ``auth_method``: ``"client_secret_basic"`` (default) or
      ``"client_secret_post"``.
    * ``timeout``: seconds for one token request (and for a caller waiting for it).

    Raises :class:`kitsd.core.errors.MisuseError` / ``TypeError`` for bad arguments;
    :meth:`token` raises :class:`kitsd.auth.TokenError` (or its
    :class:`~kitsd.auth.TokenEndpointError`) when no token can be had.  The secret
    and the tokens appear in no message, log line or ``repr()``.  Thread-safe;
    :meth:`close` closes its client (a context manager).
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | Sequence[str] | None = None, audience: str | None = None,
                 params: Mapping[str, str] | None = None,
                 auth_method: AuthMethod = "client_secret_basic",
                 transport: httpx.BaseTransport | None = None, timeout: float = 10.0,
                 leeway: float = 60.0) -> None:
        super().__init__(token_url, client_id, client_secret, scope=scope, audience=audience,
                         params=params, auth_method=auth_method, timeout=timeout,
                         leeway=leeway)
        self._client = httpx.Client(transport=transport, timeout=self._timeout)
        self._flight = SingleFlight(self._fetch, name=self._exchange.name,
                                    wait=self._timeout + 1.0)

    def _fetch(self) -> Token:
        method, url, headers, form = self._exchange.request()
        started = time.monotonic()
        try:
            response = self._client.request(method, url, headers=headers, data=form)
        except httpx.HTTPError as error:
            raise self._failed(error) from error
        return self._token(started, response)

    def token(self) -> str:
        """The access token to send now (cached, or fetched once for all callers)."""
        return self._flight.token()

    def invalidate(self, token: str) -> None:
        self._flight.invalidate(token)

    def close(self) -> None:
        """Close the client the token requests go through.  Idempotent."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncClientCredentials(_Shared):
    """The asyncio twin of :class:`ClientCredentials` (same arguments, an
    ``httpx.AsyncBaseTransport`` as ``transport``): an ``httpx.Auth`` for
    ``httpx.AsyncClient``; ``await atoken()``.  One per event loop (its waiters
    wait on that loop); :meth:`aclose` closes its client (an async context manager).
    For gRPC call credentials, which gRPC runs on its own threads, use
    :class:`ClientCredentials`."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | Sequence[str] | None = None, audience: str | None = None,
                 params: Mapping[str, str] | None = None,
                 auth_method: AuthMethod = "client_secret_basic",
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0,
                 leeway: float = 60.0) -> None:
        super().__init__(token_url, client_id, client_secret, scope=scope, audience=audience,
                         params=params, auth_method=auth_method, timeout=timeout,
                         leeway=leeway)
        self._client = httpx.AsyncClient(transport=transport, timeout=self._timeout)
        self._flight = AsyncSingleFlight(self._fetch, name=self._exchange.name,
                                         wait=self._timeout + 1.0)

    async def _fetch(self) -> Token:
        method, url, headers, form = self._exchange.request()
        started = time.monotonic()
        try:
            response = await self._client.request(method, url, headers=headers, data=form)
        except httpx.HTTPError as error:
            raise self._failed(error) from error
        return self._token(started, response)

    async def atoken(self) -> str:
        """The access token to send now (cached, or fetched once for all callers)."""
        return await self._flight.token()

    def invalidate(self, token: str) -> None:
        self._flight.invalidate(token)

    async def aclose(self) -> None:
        """Close the client the token requests go through.  Idempotent."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
