"""The ``httpx.Auth`` every kitsd.auth credential is: ``Authorization: <scheme> <token>``
on each request, and one retry of a request refused with 401, with a fresh token."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

__all__ = ["HeaderAuth"]


def _replayable(request: httpx.Request) -> bool:
    """Whether ``request``'s body can be sent again as it was: it is in memory.  (A
    generator raises when iterated twice; a file would silently send what is left
    of it, nothing.)"""
    return isinstance(request.stream, httpx.ByteStream)


class HeaderAuth(httpx.Auth):
    """Base of the credentials (:class:`JWTSigner`, :class:`ClientCredentials`,
    :class:`AsyncClientCredentials`, :class:`BasicAuth`): an ``httpx.Auth`` for
    ``httpx.Client(auth=...)`` -- and so for requests through :class:`kitsd.Transport` --
    and for ``sd.http`` endpoints (``client_kwargs={"auth": ...}``).

    Subclasses give :meth:`token` (sync) and/or :meth:`atoken` (async), and
    :meth:`invalidate`.  A response of 401 to a request sent with a token makes the
    credential drop that token and the request go once more with a fresh one (only
    once: a second 401 is the answer).  Only a request whose body is in memory
    (``content=bytes``, ``data=``, ``json=``, none) is sent again: a streamed body
    (a generator, a file, multipart) cannot be replayed, so its 401 is the answer
    (the refused token is dropped all the same; the next request gets a fresh one).
    """

    scheme = "Bearer"
    #: Whether a 401 answer is retried once with a fresh token.
    retry_unauthorized = True

    def token(self) -> str:
        """The token to send now (sync)."""
        raise TypeError(f"{type(self).__name__} is asynchronous: use it with "
                        "httpx.AsyncClient (await atoken())")

    async def atoken(self) -> str:
        """The token to send now (async); by default :meth:`token`."""
        return self.token()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (a server refused it); the next :meth:`token` gets another."""

    def authorization(self, token: str) -> str:
        """The ``Authorization`` header value for ``token``."""
        return f"{self.scheme} {token}"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                                  None]:
        token = self.token()
        request.headers["Authorization"] = self.authorization(token)
        response = yield request
        if response.status_code == 401 and self.retry_unauthorized:
            self.invalidate(token)
            if _replayable(request):
                request.headers["Authorization"] = self.authorization(self.token())
                yield request

    async def async_auth_flow(
            self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.atoken()
        request.headers["Authorization"] = self.authorization(token)
        response = yield request
        if response.status_code == 401 and self.retry_unauthorized:
            self.invalidate(token)
            if _replayable(request):
                request.headers["Authorization"] = self.authorization(await self.atoken())
                yield request

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the credential, for a gRPC call made now (sync)."""
        return (("authorization", self.authorization(self.token())),)

    def __repr__(self) -> str:
        return f"<kitsd.auth.{type(self).__name__}>"
