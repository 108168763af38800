"""The API server over httpx: one list page, one watch stream, errors mapped at the edge.

kitsd speaks the list/watch protocol itself, over the httpx it already depends
on, rather than through a Kubernetes client library (see the README's
Kubernetes section for why).  This module is all of it:

* :class:`ApiClient` -- an ``httpx.AsyncClient`` for one :class:`~sd.k8s.config.ClusterConfig`:
  its TLS context, its proxy, no environment proxies, TCP keepalives (a peer
  that vanished is noticed in about 30 s even on a watch that is quiet), and a
  bearer token put on every request by :class:`BearerAuth`.
* :meth:`ApiClient.get_json` -- one request answering JSON (a list page).
* :meth:`ApiClient.watch` -- a watch stream, yielding the events that arrived
  together as one batch (so a burst of slice updates is one snapshot).

Every failure leaves here as :class:`~sd.k8s.list_watch.Expired` (a 410) or a
:class:`~kitsd.core.errors.BackendError` chained from the httpx error.  No
header is ever logged or put in an error (httpx logs none either).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from typing import Any, Final

import httpx

from kitsd.core.errors import BackendError, RegistryUnavailableError, clip
from kitsd.sd.k8s.config import ClusterConfig, TokenSource
from kitsd.sd.k8s.list_watch import Expired, WatchEvent, decode_event, status_error

__all__ = ["DEFAULT_TIMEOUT", "MAX_EVENT_BYTES", "MAX_LIST_BYTES", "REQUEST_DEADLINE",
           "ApiClient", "BearerAuth", "decode_json"]


def decode_json(body: bytes | bytearray) -> object:
    """``body`` as JSON; raises ``ValueError`` for anything else (nesting too deep included,
    where ``json`` raises ``RecursionError``)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds to connect, send, and wait for each part of an answer that is not a watch."""
REQUEST_DEADLINE: Final = 60.0
"""Seconds a whole request that is not a watch (a list page) may take, however its
answer trickles in: the API server itself ends such requests after 60 s."""
MAX_EVENT_BYTES: Final = 64 * 1024 * 1024
"""The longest watch event line read (the API server caps objects at ~1.5 MB)."""
MAX_LIST_BYTES: Final = 256 * 1024 * 1024
"""The largest list page read: 500 slices of 1,000 endpoints fit, an endless body does not."""
_MAX_ERROR_BODY: Final = 64 * 1024


def _keepalive() -> list[tuple[int, int, int]]:
    """TCP keepalive: probe after 15 s of silence, every 5 s, give up after 3."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


class BearerAuth(httpx.Auth):
    """Puts ``Authorization: Bearer <token>`` on each request from a
    :class:`~sd.k8s.config.TokenSource`; after a ``401`` it asks the source again
    (``refresh=True``) and, if the token changed, retries once: a rotated token is
    picked up without an error.  Blocking sources run in a worker thread."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    async def _token(self, refresh: bool) -> str:
        if self._source.blocking:
            return await asyncio.to_thread(self._source.token, refresh=refresh)
        return self._source.token(refresh=refresh)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._token(False)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self._token(True)
            if fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        token = self._source.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = self._source.token(refresh=True)
            if fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request

    def __repr__(self) -> str:
        return f"BearerAuth({self._source!r})"


class ApiClient:
    """An async client for one API server (see the module docstring).

    ``transport``: an httpx transport to use instead of a real connection (tests).
    Raises :class:`~kitsd.core.errors.MisuseError` for a CA or client certificate
    that cannot be loaded.  ``aclose()`` closes its connections.  Use from one
    event loop.
    """

    def __init__(self, config: ClusterConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.server = config.server
        self._timeout = timeout
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=config.ssl_context if config.server.startswith("https") else True,
                socket_options=_keepalive(),
                proxy=config.proxy,
            )
        self._extensions: dict[str, Any] = {}
        if config.tls_server_name:
            self._extensions["sni_hostname"] = config.tls_server_name
        self._client = httpx.AsyncClient(
            base_url=config.server,
            transport=transport,
            auth=BearerAuth(config.token) if config.token is not None else None,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": "kitsd (sd.k8s)"},
        )

    async def get_json(self, path: str, params: Mapping[str, str], *, verb: str,
                       what: str) -> dict[str, Any]:
        """GET ``path`` and decode its JSON object.  Raises :class:`Expired` on 410,
        else a :class:`~kitsd.core.errors.BackendError` for any failure -- an answer
        longer than :data:`MAX_LIST_BYTES` or slower than :data:`REQUEST_DEADLINE`
        included."""
        request = self._client.build_request("GET", path, params=params,
                                             extensions=self._extensions)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                response = await self._client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        body = await _read_capped(response)
                        raise self._refusal(response.status_code, body, verb, what)
                    content = bytearray()
                    async for chunk in response.aiter_bytes():
                        content += chunk
                        if len(content) > MAX_LIST_BYTES:
                            raise RegistryUnavailableError(
                                f"kube-apiserver at {self.server} answered {verb} {what} with "
                                f"more than {MAX_LIST_BYTES} bytes")
                finally:
                    await response.aclose()
        except TimeoutError:
            raise RegistryUnavailableError(
                f"kube-apiserver at {self.server} took longer than {REQUEST_DEADLINE:g}s to "
                f"answer {verb} {what}") from None
        except httpx.HTTPError as error:
            raise self._unreachable(error, verb, what) from error
        try:
            answer = decode_json(content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RegistryUnavailableError(
                f"kube-apiserver at {self.server} answered {verb} {what} with something "
                "that is not a JSON object")
        return answer

    @contextlib.asynccontextmanager
    async def watch(self, path: str, params: Mapping[str, str], *, read_timeout: float | None,
                    verb: str = "watch", what: str = "") -> AsyncIterator[
                        AsyncIterator[list[WatchEvent]]]:
        """Open a watch stream; yields an async iterator of event batches (the events
        that arrived together).  The iterator ends when the server ends the stream or
        nothing arrived for ``read_timeout`` seconds (the caller resumes then).
        Raises :class:`Expired` on a 410 answer, else a
        :class:`~kitsd.core.errors.BackendError`; a stream that breaks raises
        :class:`~kitsd.core.errors.RegistryUnavailableError` from the iterator; a
        line that is not an event, ``RegistryUnavailableError`` too."""
        timeout = httpx.Timeout(self._timeout, read=read_timeout)
        request = self._client.build_request("GET", path, params=params, timeout=timeout,
                                             extensions=self._extensions)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unreachable(error, verb, what) from error
        try:
            if response.status_code != 200:
                body = await _read_capped(response)
                raise self._refusal(response.status_code, body, verb, what)
            yield self._batches(response, verb, what)
        finally:
            await response.aclose()

    async def _batches(self, response: httpx.Response, verb: str,
                       what: str) -> AsyncIterator[list[WatchEvent]]:
        pending = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                if b"\n" not in chunk:
                    pending += chunk
                    if len(pending) > MAX_EVENT_BYTES:
                        raise RegistryUnavailableError(
                            f"kube-apiserver at {self.server} sent a watch event longer than "
                            f"{MAX_EVENT_BYTES} bytes")
                    continue
                pending += chunk
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                batch: list[WatchEvent] = []
                for line in lines:
                    try:
                        event = decode_event(bytes(line))
                    except ValueError as error:
                        raise RegistryUnavailableError(
                            f"kube-apiserver at {self.server} sent {error}") from None
                    if event is not None:
                        batch.append(event)
                if batch:
                    yield batch
        except httpx.ReadTimeout:
            return  # silent for read_timeout: the caller watches again from its RV
        except httpx.HTTPError as error:
            raise self._unreachable(error, verb, what) from error

    def _unreachable(self, error: httpx.HTTPError, verb: str, what: str) -> BackendError:
        said = clip(str(error), 200) or type(error).__name__
        return RegistryUnavailableError(
            f"kube-apiserver at {self.server} unreachable to {verb} {what}: "
            f"{type(error).__name__}: {said}")

    def _refusal(self, code: int, body: bytes, verb: str, what: str) -> Exception:
        status: Mapping[str, object] | str | None
        try:
            decoded = decode_json(body)
            status = decoded if isinstance(decoded, dict) else None
        except ValueError:
            status = body[:_MAX_ERROR_BODY].decode("utf-8", "replace")
        if code == 410:
            message = status.get("message") if isinstance(status, Mapping) else status
            return Expired(clip(str(message or "gone"), 200))
        return status_error(code, status, verb=verb, what=what, where=self.server)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"ApiClient({self.server!r})"


async def _read_capped(response: httpx.Response) -> bytes:
    """The start of an error answer (at most 64 KiB, at most :data:`DEFAULT_TIMEOUT`
    seconds: it only feeds a message)."""
    body = bytearray()
    ends = time.monotonic() + DEFAULT_TIMEOUT
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_ERROR_BODY or time.monotonic() > ends:
                break
    return bytes(body[:_MAX_ERROR_BODY])
