"""One HTTP endpoint class, written once, for asyncio; the sync twin is generated from
this module by ``.ci/unasync.py`` (see its ``PAIRS``).  Where the two genuinely
differ (the event loop a client belongs to) lives in :mod:`sd.http._loops`.

Each endpoint is a thin driver over :class:`sd.http._spec.Spec` (the steps before
and after sending) and :class:`sd.http._clients.ClientSettings` (how its client is
made).  Both are built once per factory and shared by its endpoints, so an
endpoint itself is a few hundred bytes until its first call makes its client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Self

import httpx

from kitsd.core.deadline import current_deadline
from kitsd.sd.http._base import RequestT, ResponseT, _Endpoint, _Shared
from kitsd.sd.http._loops import ASYNC_CLIENTS, async_close_client, async_running_loop
from kitsd.sd.http._spec import UNREACHED, unreachable

__all__ = ["AsyncHTTPEndpoint"]

logger = logging.getLogger(__name__)


class AsyncHTTPEndpoint(_Endpoint[RequestT, ResponseT]):
    """An endpoint calling ``method path`` on one instance over its own
    ``httpx.AsyncClient``.

    Usually built by :func:`sd.http.async_factory`; the arguments are the same plus
    ``instance``.  Raises :class:`kitsd.core.errors.MisuseError` (a ``ValueError``)
    for a bad instance, method, path, scheme or ``client_kwargs`` value,
    ``TypeError`` for wrong types.

    The client (``base_url=f"{scheme}://{instance}"``, ``client_kwargs``) is made
    by the first call, so an endpoint that is never called costs next to nothing
    (and an asyncio client belongs to the event loop of that call: a call from
    another loop afterwards raises ``RuntimeError``; make the endpoints on, or
    per, the loop that uses them).  Calling raises :class:`StatusError` for a
    refused status, ``TimeoutError`` when the retry deadline passes before or
    during the request (the request is then abandoned and its connection
    closed), :class:`sd.http.ConnectError` / :class:`sd.http.ConnectTimeout` when
    it never reached the instance, and httpx's other errors as they come.
    ``encode`` and ``decode`` are plain functions.

    Calls may run at once (from many threads; asyncio: many tasks of its loop).
    :meth:`aclose` closes the client if one was made (when the calls in flight
    have ended, if any: the last of them closes it; it does not wait for them);
    calls after it raise ``RuntimeError``.  A context manager (closes on exit).
    """

    __slots__ = ("_client", "_loop")
    _async_clients = ASYNC_CLIENTS

    def _setup(self, instance: str, shared: _Shared) -> None:
        super()._setup(instance, shared)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The underlying ``httpx.AsyncClient``, or ``None`` before the first call
        (for inspection, closed once the endpoint is; do not close it directly)."""
        return self._client

    def _enter(self) -> httpx.AsyncClient:
        loop = async_running_loop()
        with self._lock:
            self._refuse_if_closed()
            client = self._client
            if client is None:
                client, _ = self._shared.settings.async_client(self._base_url)
                self._url = httpx.URL(self._base_url + self._spec.path)
                self._client, self._loop = client, loop
            elif loop is not self._loop:
                raise RuntimeError(
                    f"{self!r} was first used on another event loop; its connections belong there"
                )
            self._inflight += 1
            return client

    async def __call__(self, request: RequestT) -> ResponseT:
        """Send ``request``; return ``decode(response)`` or raise (see the class docstring)."""
        client = self._enter()
        spec = self._spec
        try:
            deadline = current_deadline()
            if deadline is None:
                response = await client.request(spec.method, self._url, **spec.encode(request))
                return spec.finish(response, self._instance)
            left = deadline - time.monotonic()
            if left <= 0:
                raise spec.no_time_left(self._instance)
            kwargs = spec.encode(request)
            configured = spec.bound(kwargs, client.timeout, left)
            try:
                response = await client.request(spec.method, self._url, **kwargs)
            except httpx.TimeoutException as error:
                left_now = deadline - time.monotonic()
                replacement = spec.deadline_error(error, configured, left, left_now, self._instance)
                if replacement is None:
                    raise
                raise replacement from error
            return spec.finish(response, self._instance)
        except UNREACHED as error:  # the request never reached the instance
            raise unreachable(error) from error.__cause__
        finally:
            if self._left_last():
                await self._shut()  # asyncio: on the client's own loop, this call ran there

    async def _shut(self) -> None:
        client = self._client  # kept, closed, for inspection
        if client is not None:
            logger.debug("closing the HTTP client for %s", self._instance)
            await async_close_client(client, self._loop, self)

    async def aclose(self) -> None:
        """Close the client, if a call made one, and its pooled connections.

        Idempotent; never raises for that.  Calls in flight end normally; the
        last of them closes the client.  asyncio: the client is closed on its own
        event loop (see :mod:`sd.http._loops`).
        """
        if self._close_now():
            await self._shut()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
