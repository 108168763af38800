"""The httpx internals the transport leans on, kept in one place.

Pointing a request's URL at an instance with ``URL.copy_with(host=, port=)``
re-parses and re-validates the whole URL (a third of the transport's cost per
call).  httpx keeps a parsed URL as an immutable named tuple
(``URL._uri_reference``, an ``httpx._urlparse.ParseResult``); replacing its host
and port gives the same URL without the parse.  :func:`make_rehost` checks at
import that the internal looks as expected and otherwise falls back to
``copy_with``.

Each attempt is a new ``httpx.Request`` for the instance: :data:`attempt_request`
builds it from parts that are already valid (the caller's request's method,
headers and stream, a URL rehosted as above), setting the five public attributes
``httpx.Request(method, url, headers=, stream=, extensions=)`` sets, without its
checks and copies.  :func:`make_attempt_request` checks at import that the
constructor sets exactly those, else uses it.

:data:`content_length` reads a response's ``Content-Length`` from the
``(raw name, lower-case name, value)`` triples ``httpx.Headers`` keeps
(``Headers._list``) instead of ``Headers.get``, which decodes and joins; checked
at import likewise.  ``tests/transport/test_httpx_url.py`` fails loudly when
httpx changes any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

__all__ = [
    "AttemptRequest",
    "Rehost",
    "attempt_request",
    "content_length",
    "encoded_host",
    "make_attempt_request",
    "make_content_length",
    "make_rehost",
    "rehost",
]

#: ``rehost(url, host, port) -> url``: ``url`` with host (as :func:`encoded_host`
#: returns it) and port replaced.
Rehost = Callable[[httpx.URL, str, int], httpx.URL]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


#: The fields of httpx's ``ParseResult``, in the order :func:`_fast` rebuilds them.
_FIELDS = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")


def _fast(url: httpx.URL, host: str, port: int) -> httpx.URL:
    scheme, userinfo, _, _, path, query, fragment = reference = url._uri_reference
    if port == _DEFAULT_PORTS.get(scheme):
        port_or_none: int | None = None  # httpx drops a scheme's default port
    else:
        port_or_none = port
    new = object.__new__(httpx.URL)
    new._uri_reference = tuple.__new__(  # NamedTuple._replace, without its generality
        type(reference), (scheme, userinfo, host, port_or_none, path, query, fragment))
    return new


def _slow(url: httpx.URL, host: str, port: int) -> httpx.URL:
    return url.copy_with(host=host, port=port)


def encoded_host(host: str) -> str:
    """``host`` as httpx stores it in a parsed URL (what :data:`rehost` takes)."""
    probe = httpx.URL(scheme="http", host=host, port=1)
    reference = getattr(probe, "_uri_reference", None)
    found = getattr(reference, "host", None)
    return found if isinstance(found, str) else host


def make_rehost() -> Rehost:
    """:func:`_fast` if httpx's parsed URL is the named tuple it is known to be (and
    gives the same URL as ``copy_with``), else ``copy_with``."""
    try:
        probe = httpx.URL("http://users/a/b?x=1")
        reference = probe._uri_reference
        if tuple(getattr(reference, "_fields", ())) == _FIELDS:
            for host, port in (("10.0.0.7", 8080), ("::1", 80)):
                if _fast(probe, encoded_host(host), port) != _slow(probe, host, port):
                    return _slow
            return _fast
    except Exception:  # noqa: BLE001 - any surprise means "not the internal we know"
        return _slow
    return _slow


rehost: Rehost = make_rehost()


#: ``attempt_request(method, url, headers, stream, extensions) -> httpx.Request``.
AttemptRequest = Callable[
    [str, httpx.URL, httpx.Headers, Any, dict[str, Any]], httpx.Request]

_SET_BY_INIT = frozenset({"method", "url", "headers", "stream", "extensions"})


def _built(
    method: str, url: httpx.URL, headers: httpx.Headers, stream: Any,
    extensions: dict[str, Any],
) -> httpx.Request:
    request = object.__new__(httpx.Request)
    request.method = method
    request.url = url
    request.headers = headers
    request.stream = stream
    request.extensions = extensions
    return request


def _constructed(
    method: str, url: httpx.URL, headers: httpx.Headers, stream: Any,
    extensions: dict[str, Any],
) -> httpx.Request:
    return httpx.Request(method, url, headers=headers, stream=stream, extensions=extensions)


def make_attempt_request() -> AttemptRequest:
    """:func:`_built` if ``httpx.Request(..., stream=...)`` sets exactly the five
    attributes it sets, else the constructor itself."""
    try:
        probe = httpx.Request("GET", "http://users/", headers={"a": "b"},
                              stream=httpx.ByteStream(b""), extensions={"x": 1})
        if set(vars(probe)) == _SET_BY_INIT and not hasattr(httpx.Request, "__slots__"):
            return _built
    except Exception:  # noqa: BLE001 - any surprise means "not the class we know"
        return _constructed
    return _constructed


attempt_request: AttemptRequest = make_attempt_request()


def _length_fast(headers: httpx.Headers) -> bytes | str | None:
    for _, name, value in headers._list:
        if name == b"content-length":
            return value
    return None


def _length_slow(headers: httpx.Headers) -> bytes | str | None:
    value: str | None = headers.get("content-length")
    return value


def make_content_length() -> Callable[[httpx.Headers], bytes | str | None]:
    """:func:`_length_fast` if ``httpx.Headers`` keeps its triples as known, else
    ``Headers.get``."""
    try:
        probe = httpx.Headers({"Content-Length": "5", "X": "y"})
        if (probe._list == [(b"Content-Length", b"content-length", b"5"), (b"X", b"x", b"y")]
                and _length_fast(probe) == b"5"):
            return _length_fast
    except Exception:  # noqa: BLE001 - any surprise means "not the class we know"
        return _length_slow
    return _length_slow


#: ``content_length(headers)``: the ``Content-Length`` value (bytes or str), or ``None``.
content_length: Callable[[httpx.Headers], bytes | str | None] = make_content_length()
