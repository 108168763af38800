"""The factories of HTTP endpoints; the endpoints are :class:`AsyncHTTPEndpoint`
(``_async/endpoint.py``) and its generated sync twin :class:`HTTPEndpoint`
(``_sync/endpoint.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from kitsd.sd.http._async.endpoint import AsyncHTTPEndpoint
from kitsd.sd.http._base import RequestT, ResponseT, _Shared
from kitsd.sd.http._spec import AcceptStatus
from kitsd.sd.http._sync.endpoint import HTTPEndpoint

__all__ = ["AsyncHTTPEndpoint", "HTTPEndpoint", "async_factory", "factory"]


def factory(
    method: str,
    path: str,
    *,
    encode: Callable[[RequestT], Mapping[str, Any]],
    decode: Callable[[httpx.Response], ResponseT],
    client_kwargs: Mapping[str, Any] | None = None,
    accept_status: AcceptStatus = None,
    scheme: str = "http",
) -> Callable[[str], HTTPEndpoint[RequestT, ResponseT]]:
    """``factory(instance) -> HTTPEndpoint`` calling ``method path`` on each instance.

    ``encode(request)`` returns httpx request arguments (``json``, ``params``,
    ``headers``, ``content``, ``timeout``, ...; not ``method`` or ``url``);
    ``decode(response)`` turns an accepted ``httpx.Response`` into the result.
    2xx is always accepted; ``accept_status`` (a predicate or a container such
    as ``{404}``) accepts more, and every other status raises
    :class:`StatusError`.  ``client_kwargs`` go to each instance's
    ``httpx.Client`` (not ``base_url``); they are never logged, since headers may
    hold secrets.  The TLS context made from them (``verify``, ``cert``) is built
    once, here, and shared by every client; an ``http`` factory whose
    ``client_kwargs`` set none of ``verify``, ``cert`` or ``follow_redirects``
    loads no certificates at all, and its clients would refuse an ``https``
    peer.  A ``transport`` given there is shared by every instance's client.
    ``scheme`` is ``"http"`` or ``"https"``.

    The arguments are checked here, once: :class:`kitsd.core.errors.MisuseError` (a
    ``ValueError``) for an empty method, a path not starting with ``/``, a bad
    scheme, ``base_url`` in ``client_kwargs`` or a value httpx refuses there;
    ``TypeError`` for wrong types and unknown ``client_kwargs``.  Nothing is left
    running if they fail.  The returned factory raises
    :class:`kitsd.core.errors.InvalidInstanceError` for a bad instance; it does no I/O.
    """
    shared = _Shared.build(
        method, path, encode, decode, client_kwargs, accept_status, scheme, asynchronous=False
    )

    def make_endpoint(instance: str) -> HTTPEndpoint[RequestT, ResponseT]:
        return HTTPEndpoint._from_shared(instance, shared)

    return make_endpoint


def async_factory(
    method: str,
    path: str,
    *,
    encode: Callable[[RequestT], Mapping[str, Any]],
    decode: Callable[[httpx.Response], ResponseT],
    client_kwargs: Mapping[str, Any] | None = None,
    accept_status: AcceptStatus = None,
    scheme: str = "http",
) -> Callable[[str], AsyncHTTPEndpoint[RequestT, ResponseT]]:
    """``factory(instance) -> AsyncHTTPEndpoint``: :func:`factory` for asyncio.

    Same arguments and checks; ``client_kwargs`` go to each ``httpx.AsyncClient``.
    """
    shared = _Shared.build(
        method, path, encode, decode, client_kwargs, accept_status, scheme, asynchronous=True
    )

    def make_endpoint(instance: str) -> AsyncHTTPEndpoint[RequestT, ResponseT]:
        return AsyncHTTPEndpoint._from_shared(instance, shared)

    return make_endpoint
