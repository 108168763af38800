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

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextvars import Token as ContextToken
from types import TracebackType
from typing import Self, TypedDict, Unpack

import httpx

from kitsd.auth._errors import TokenEndpointError, TokenError
from kitsd.auth._exchange import AuthMethod, Exchange
from kitsd.auth._header import HeaderAuth
from kitsd.auth._source import AsyncSingleFlight, SingleFlight
from kitsd.auth._token import Token, refresh_point
from kitsd.core import validate
from kitsd.core.deadline import current_deadline, reset_deadline, set_deadline
from kitsd.sd.http import _deadline

__all__ = ["MAX_TOKEN_RESPONSE", "AsyncClientCredentials", "ClientCredentials",
           "CredentialsOptions"]

logger = logging.getLogger(__name__)

#: The largest token endpoint answer read (a token answer is a few kilobytes).
MAX_TOKEN_RESPONSE = 1 << 20


class _TooLong(Exception):
    """The token request ran past its ``timeout`` (a trickled answer)."""


def _within(timeout: float) -> tuple[float, ContextToken[float | None]]:
    """The token request's deadline (``timeout`` from now, or the enclosing retry's if
    earlier), set for the network backends that end every socket wait by it."""
    at = time.monotonic() + timeout
    outer = current_deadline()
    if outer is not None and outer < at:
        at = outer
    return at, set_deadline(at)


def _bounded_client(client: httpx.Client | httpx.AsyncClient) -> None:
    """Make the transports httpx made for ``client`` (the default one and any
    environment proxy's) end every socket wait by the deadline (see sd.http._deadline)."""
    transports = [getattr(client, "_transport", None)]
    transports += list(getattr(client, "_mounts", {}).values())
    for transport in transports:
        if isinstance(transport, httpx.HTTPTransport):
            _deadline.install(transport)
        elif isinstance(transport, httpx.AsyncHTTPTransport):
            _deadline.install_async(transport)


class CredentialsOptions(TypedDict, total=False):
    """The keyword options of both credentials classes but ``transport`` (see
    :class:`ClientCredentials`)."""

    scope: str | Sequence[str] | None
    audience: str | None
    params: Mapping[str, str] | None
    auth_method: AuthMethod
    timeout: float
    leeway: float


class _Shared(HeaderAuth):
    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | Sequence[str] | None = None, audience: str | None = None,
                 params: Mapping[str, str] | None = None,
                 auth_method: AuthMethod = "client_secret_basic", timeout: float = 10.0,
                 leeway: float = 60.0) -> None:
        self._exchange = Exchange(token_url, client_id, client_secret, scope=scope,
                                  audience=audience, params=params, auth_method=auth_method)
        self._timeout = validate.seconds("timeout", timeout, maximum=600)
        self._leeway = validate.seconds("leeway", leeway, zero=True)

    @property
    def client_id(self) -> str:
        return self._exchange.client_id

    def _token(self, started: float, status: int, body: bytes) -> Token:
        value, lifetime = self._exchange.read(status, body)
        expires_at, refresh_at = refresh_point(started, lifetime, self._leeway)
        logger.debug("%s: got a token valid for %s", self._exchange.name,
                     "ever" if lifetime is None else f"{lifetime:g}s")
        return Token(value, expires_at, refresh_at)

    def _failed(self, error: Exception) -> TokenError:
        if isinstance(error, _TooLong | TimeoutError | httpx.TimeoutException):
            return TokenError(self._exchange.name,
                              f"the token request took longer than timeout={self._timeout:g}s")
        return TokenError(self._exchange.name, f"the token request failed ({type(error).__name__})")

    def _closed(self) -> TokenError:
        return TokenError(self._exchange.name, "closed: no token can be fetched after close()")

    def _add(self, body: bytearray, chunk: bytes, status: int, at: float) -> None:
        """Add ``chunk`` to the answer's ``body``; raises when it grows past
        :data:`MAX_TOKEN_RESPONSE` or the request's time is up."""
        body += chunk
        if len(body) > MAX_TOKEN_RESPONSE:
            raise TokenEndpointError(self._exchange.name, status, None,
                                     f"the answer is longer than {MAX_TOKEN_RESPONSE} bytes")
        if time.monotonic() > at:
            raise _TooLong

    def __repr__(self) -> str:
        return f"<kitsd.auth.{type(self).__name__} {self._exchange.name}>"


class ClientCredentials(_Shared):
    """An OAuth2 access token from the client credentials grant, as an ``httpx.Auth``
    (``Authorization: Bearer``) and gRPC call credentials
    (:func:`kitsd.auth.grpc_credentials`).

    One token is shared by every request and every instance until shortly before it
    expires (``leeway`` seconds, 60 by default, at most a tenth of its lifetime); then one caller
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
    * ``timeout``: seconds for one whole token request (10), at most 600 (connecting,
      sending and reading the answer, however slowly it trickles; an answer over
      1 MiB is refused), and for a caller waiting for it.

    Raises :class:`kitsd.core.errors.MisuseError` / ``TypeError`` for bad arguments;
    :meth:`token` raises :class:`kitsd.auth.TokenError` (or its
    :class:`~kitsd.auth.TokenEndpointError`) when no token can be had.  The secret
    and the tokens appear in no message, log line or ``repr()``.  Thread-safe;
    :meth:`close` closes its client (a context manager).
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 transport: httpx.BaseTransport | None = None,
                 **options: Unpack[CredentialsOptions]) -> None:
        validate.keywords("ClientCredentials", options, CredentialsOptions)
        super().__init__(token_url, client_id, client_secret, **options)
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport (a kitsd.Transport), "
                            f"not {type(transport).__name__}")
        self._client = httpx.Client(transport=transport, timeout=self._timeout)
        _bounded_client(self._client)
        self._flight = SingleFlight(self._fetch, name=self._exchange.name,
                                    wait=self._timeout + 1.0)

    def _fetch(self) -> Token:
        if self._client.is_closed:
            raise self._closed()
        method, url, headers, form = self._exchange.request()
        started = time.monotonic()
        at, scope = _within(self._timeout)
        try:
            with self._client.stream(method, url, headers=headers, data=form) as response:
                body = bytearray()
                chunks: Iterator[bytes] = response.iter_bytes()
                for chunk in chunks:
                    self._add(body, chunk, response.status_code, at)
                status = response.status_code
        except (httpx.HTTPError, _TooLong) as error:
            raise self._failed(error) from error
        finally:
            reset_deadline(scope)
        return self._token(started, status, bytes(body))

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
                 transport: httpx.AsyncBaseTransport | None = None,
                 **options: Unpack[CredentialsOptions]) -> None:
        validate.keywords("AsyncClientCredentials", options, CredentialsOptions)
        super().__init__(token_url, client_id, client_secret, **options)
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport (a "
                            f"kitsd.AsyncTransport), not {type(transport).__name__}")
        self._client = httpx.AsyncClient(transport=transport, timeout=self._timeout)
        _bounded_client(self._client)
        self._flight = AsyncSingleFlight(self._fetch, name=self._exchange.name,
                                         wait=self._timeout + 1.0)

    async def _fetch(self) -> Token:
        if self._client.is_closed:
            raise self._closed()
        method, url, headers, form = self._exchange.request()
        started = time.monotonic()
        at, scope = _within(self._timeout)
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + at
                                          - time.monotonic()):
                async with self._client.stream(method, url, headers=headers,
                                               data=form) as response:
                    body = bytearray()
                    chunks: AsyncIterator[bytes] = response.aiter_bytes()
                    async for chunk in chunks:
                        self._add(body, chunk, response.status_code, at)
                    status = response.status_code
        except (httpx.HTTPError, _TooLong, TimeoutError) as error:
            raise self._failed(error) from error
        finally:
            reset_deadline(scope)
        return self._token(started, status, bytes(body))

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
