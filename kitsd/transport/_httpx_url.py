"""The one httpx internal the transport leans on, kept in one place.

Pointing a request's URL at an instance with ``URL.copy_with(host=, port=)``
re-parses and re-validates the whole URL (a third of the transport's cost per
call).  httpx keeps a parsed URL as an immutable named tuple
(``URL._uri_reference``, an ``httpx._urlparse.ParseResult``); replacing its host
and port gives the same URL without the parse.  :func:`make_rehost` checks at
import that the internal looks as expected and otherwise falls back to
``copy_with``; ``tests/transport/test_httpx_url.py`` fails loudly when httpx
changes it.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

__all__ = ["Rehost", "encoded_host", "make_rehost", "rehost"]

#: ``rehost(url, host, port) -> url``: ``url`` with host (as :func:`encoded_host`
#: returns it) and port replaced.
Rehost = Callable[[httpx.URL, str, int], httpx.URL]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _fast(url: httpx.URL, host: str, port: int) -> httpx.URL:
    reference = url._uri_reference
    if port == _DEFAULT_PORTS.get(reference.scheme):
        port_or_none: int | None = None  # httpx drops a scheme's default port
    else:
        port_or_none = port
    new = object.__new__(httpx.URL)
    new._uri_reference = reference._replace(host=host, port=port_or_none)
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
        if {"host", "port"} <= set(getattr(reference, "_fields", ())):
            for host, port in (("10.0.0.7", 8080), ("::1", 80)):
                if _fast(probe, encoded_host(host), port) != _slow(probe, host, port):
                    return _slow
            return _fast
    except Exception:  # noqa: BLE001 - any surprise means "not the internal we know"
        return _slow
    return _slow


rehost: Rehost = make_rehost()
