"""Per-instance client certificates (mTLS) for instances reached over https.

:class:`MTLSTransport` is an ``httpx`` transport that presents, to each https
instance, the client certificate ``certificate(instance)`` names.  Give it to
:class:`kitsd.Transport` as its inner transport (the requests it receives are
already addressed to one instance) or to an ``sd.http`` client::

    certificates = {"10.0.0.7:8443": ("a.pem", "a.key"), "10.0.0.8:8443": ("b.pem", "b.key")}
    transport = kitsd.Transport(discover, transport=kitsd.auth.MTLSTransport(
        certificates.get, verify="ca.pem"))

It keeps one pooled ``httpx`` transport per distinct certificate (so as many as
``certificate`` names, not one per instance), made on first use; plain http
requests, and instances ``certificate`` answers ``None`` for, go through one
without a client certificate.  Key files are read when the first request needs
them; a certificate that cannot be loaded raises
:class:`kitsd.core.errors.MisuseError` naming the file, never its content.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import httpx

from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.instance import join_host_port

__all__ = ["AsyncMTLSTransport", "CertificateFor", "MTLSTransport"]

#: ``instance -> (certfile, keyfile)``, ``certfile`` (one PEM with both), or ``None``.
CertificateFor = Callable[[str], tuple[str, str] | str | None]
Pair = tuple[str, str | None]
T = TypeVar("T", httpx.HTTPTransport, httpx.AsyncHTTPTransport)


class _Router(Generic[T]):
    """Which transport a request goes through; shared by both flavours (no I/O)."""

    def __init__(self, certificate: CertificateFor | Mapping[str, tuple[str, str] | str],
                 verify: str | bool, make: Callable[[ssl.SSLContext | bool], T]) -> None:
        if isinstance(certificate, Mapping):
            certificate = dict(certificate).get
        if not callable(certificate):
            raise TypeError("certificate must be a function instance -> (certfile, keyfile) "
                            "or a mapping")
        if not isinstance(verify, str | bool):
            raise TypeError("verify must be a CA bundle path or a bool")
        if verify == "":
            raise MisuseError("verify must be a CA bundle path or a bool, not ''")
        self._certificate = certificate
        self._verify = verify
        self._make: Callable[[ssl.SSLContext | bool], T] = make
        self._lock = threading.Lock()
        self._transports: dict[Pair | None, T] = {}
        self._closed = False
        self._context(None)  # a CA bundle that cannot be loaded fails here, naming verify

    def _context(self, pair: Pair | None) -> ssl.SSLContext:
        verify = self._verify
        try:
            context = ssl.create_default_context(
                cafile=verify if isinstance(verify, str) else None)
        except (OSError, ssl.SSLError) as error:
            raise MisuseError(f"verify: cannot load the CA bundle {shown_value(verify)} "
                              f"({type(error).__name__})") from None
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if pair is not None:
            try:
                context.load_cert_chain(pair[0], pair[1])
            except (OSError, ssl.SSLError) as error:
                raise MisuseError(f"cannot load the client certificate {shown_value(pair[0])} "
                                  f"({type(error).__name__})") from None
        return context

    def route(self, url: httpx.URL) -> T:
        pair: Pair | None = None
        if url.scheme == "https":
            found = self._certificate(join_host_port(url.host, url.port or 443))
            if isinstance(found, str):
                pair = (found, None)
            elif found is not None:
                pair = (found[0], found[1])
        with self._lock:
            self._check_open()
            transport = self._transports.get(pair)
        if transport is not None:
            return transport
        made = self._make(self._context(pair))
        with self._lock:
            self._check_open()
            transport = self._transports.setdefault(pair, made)
        return transport if transport is made else self._drop(made, transport)

    def _check_open(self) -> None:
        if self._closed:  # a transport made now would never be closed
            raise RuntimeError("the mTLS transport is closed")

    @staticmethod
    def _drop(made: T, kept: T) -> T:
        del made  # another request made it first; this one never opened a connection
        return kept

    def take_all(self) -> list[T]:
        with self._lock:
            self._closed = True
            transports = list(self._transports.values())
            self._transports.clear()
        return transports


class MTLSTransport(httpx.BaseTransport):
    """Presents ``certificate(instance)``'s client certificate to each https instance
    (see the module docstring).  ``certificate``: a function or a mapping of
    instance strings; ``verify``: a CA bundle path, ``True`` (the system's) or
    ``False`` (a bundle that cannot be loaded raises
    :class:`kitsd.core.errors.MisuseError` here); ``transport_kwargs`` go to each
    ``httpx.HTTPTransport``.  Thread-safe; :meth:`close` closes every transport it
    made (idempotent), and a request after it raises ``RuntimeError``."""

    def __init__(self, certificate: CertificateFor | Mapping[str, tuple[str, str] | str], *,
                 verify: str | bool = True, **transport_kwargs: Any) -> None:
        self._router: _Router[httpx.HTTPTransport] = _Router(
            certificate, verify, lambda context: httpx.HTTPTransport(verify=context,
                                                                     **transport_kwargs))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._router.route(request.url).handle_request(request)

    def close(self) -> None:
        for transport in self._router.take_all():
            transport.close()


class AsyncMTLSTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`MTLSTransport`, on ``httpx.AsyncHTTPTransport``."""

    def __init__(self, certificate: CertificateFor | Mapping[str, tuple[str, str] | str], *,
                 verify: str | bool = True, **transport_kwargs: Any) -> None:
        self._router: _Router[httpx.AsyncHTTPTransport] = _Router(
            certificate, verify, lambda context: httpx.AsyncHTTPTransport(verify=context,
                                                                          **transport_kwargs))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._router.route(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._router.take_all():
            await transport.aclose()
