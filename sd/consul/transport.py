"""py-consul over httpx: the one HTTP layer of every request kitsd sends to Consul.

py-consul builds the requests (paths, query parameters, the ``X-Consul-Token``
header) and judges the answers (its status checks and JSON callbacks); it
hands the sending itself to the ``HTTPClient`` that ``Consul.http_connect``
returns, the seam its own ``consul.aio`` plugs aiohttp into.  This module
plugs httpx into that seam, sync (:class:`HttpxConsul`, what
:func:`sd.consul.connect` returns) and async (:class:`AsyncHttpxConsul`, what
every watch and heartbeat uses), both built from one frozen
:class:`AgentSettings`, so the two paths cannot drift: the same address,
scheme, CA, client certificate (mTLS), ACL token, datacenter, consistency and
timeout reach both.

Timeouts follow py-consul's rule: ``timeout`` bounds connecting and
answering, and a blocking query (one with ``index``) gets its ``wait`` plus
Consul's jitter of up to ``wait/16`` on top.

Secrets: the token travels only in the ``X-Consul-Token`` header (a
py-consul call that puts ``token=`` in the query string has it moved into the
header, so the request line this module logs at DEBUG, as httpx's own, never
shows it), and no ``repr`` here shows it.

``transport`` is an injectable httpx transport, for tests
(``httpx.MockTransport`` serves both the sync client and the async watches).
Without one, the sync client sends through ``httpx.HTTPTransport`` and the async
one (every watch and heartbeat) through :class:`sd.consul._http11.Http11Transport`,
HTTP/1.1 by h11 over asyncio streams: a watch's answer reaches the Endpointer
without httpcore's extra event-loop passes and pool bookkeeping.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import certifi
import consul
import consul.base
import consul.std
import httpx

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.consul._http11 import Http11Transport
from kitsd.sd.consul.index import UNREAD, parse_index
from kitsd.sd.instance import split_address

__all__ = [
    "DEFAULT_TIMEOUT",
    "AgentSettings",
    "AsyncHttpxConsul",
    "HttpxConsul",
    "settings_of",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
"""Seconds the agent gets to connect and answer (a blocking query's ``wait`` is added)."""

_SCHEMES = ("http", "https")
_CONSISTENCY = ("default", "consistent", "stale")
Cert = str | tuple[str, str]


def _check_timeout(timeout: object) -> float | None:
    return validate.optional_seconds("timeout", timeout)


def _check_cert(cert: object) -> Cert | None:
    if cert is None or isinstance(cert, str):
        return cert
    if (isinstance(cert, tuple) and len(cert) == 2
            and all(isinstance(part, str) for part in cert)):
        return (cert[0], cert[1])
    raise TypeError("cert must be a file path or a (certificate, key) pair of paths, "
                    f"not {type(cert).__name__}")


@dataclass(frozen=True)
class AgentSettings:
    """Everything needed to talk to one Consul agent; the one source of both clients.

    ``host`` may be an IPv6 address in brackets.  ``verify``: ``True`` (the
    certifi bundle, as py-consul's ``requests`` uses), ``False``, or a CA file
    or directory.  ``cert``: a client certificate file (with its key) or a
    ``(certificate, key)`` pair.  ``token`` is the ACL token (never shown by
    ``repr``).  ``timeout``: seconds to connect and answer, ``None`` for no
    bound.  Raises ``TypeError``/:class:`~kitsd.core.errors.MisuseError` naming the
    bad argument; a certificate that cannot be loaded raises
    :class:`~kitsd.core.errors.MisuseError` on first use of :attr:`ssl_context`.
    """

    host: str
    port: int
    scheme: str = "http"
    verify: bool | str = True
    cert: Cert | None = None
    token: str | None = field(default=None, repr=False)
    dc: str | None = None
    consistency: str = "default"
    timeout: float | None = DEFAULT_TIMEOUT
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise MisuseError(f"host must be a host name or address, not {self.host!r}")
        validate.integer("port", self.port, minimum=1, maximum=65535)
        if self.scheme not in _SCHEMES:
            raise MisuseError(f"scheme must be 'http' or 'https', not {self.scheme!r}")
        if not isinstance(self.verify, bool | str):
            raise TypeError(f"verify must be a bool or a CA file path, not {self.verify!r}")
        object.__setattr__(self, "cert", _check_cert(self.cert))
        if self.token is not None and (not isinstance(self.token, str)
                                       or any(c in self.token for c in "\r\n")):
            raise MisuseError("token must be a string without line breaks")
        if self.dc is not None and (not isinstance(self.dc, str) or not self.dc.strip()):
            raise MisuseError(f"dc must be a non-empty string or None, not {self.dc!r}")
        if self.consistency not in _CONSISTENCY:
            raise MisuseError(f"consistency must be one of {_CONSISTENCY}, "
                              f"not {self.consistency!r}")
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))

    @classmethod
    def for_address(cls, address: str, **kwargs: Any) -> AgentSettings:
        """Settings for ``address`` (``host:port``, IPv6 in brackets) and ``kwargs``."""
        try:
            host, port = split_address(address)
        except InvalidInstanceError as error:
            raise MisuseError(f"Consul agent address must be host:port, not {address!r}") \
                from error
        return cls(host=host, port=port, **kwargs)

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` (never the token)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``https`` (built once, shared by every client of
        these settings); ``None`` for ``http``."""
        if self.scheme != "https":
            return None
        try:
            if self.verify is False:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif self.verify is True:
                context = ssl.create_default_context(cafile=certifi.where())
            elif os.path.isdir(self.verify):
                context = ssl.create_default_context(capath=self.verify)
            else:
                context = ssl.create_default_context(cafile=self.verify)
            if isinstance(self.cert, str):
                context.load_cert_chain(self.cert)
            elif self.cert is not None:
                context.load_cert_chain(*self.cert)
        except (OSError, ssl.SSLError) as error:
            raise MisuseError(f"cannot load the TLS files for {self.base_url}: {error}") \
                from error
        return context

    def httpx_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client``/``httpx.AsyncClient``."""
        context = self.ssl_context
        options: dict[str, Any] = {
            "verify": context if context is not None else False,
            "trust_env": False,  # an agent is addressed directly, never through a proxy
            "default_encoding": "utf-8",
        }
        if self.transport is not None:
            options["transport"] = self.transport
        return options

    def sync_client(self) -> HttpxConsul:
        """A new :class:`HttpxConsul` with these settings (close it when done)."""
        return HttpxConsul(self)

    def async_client(self) -> AsyncHttpxConsul:
        """A new :class:`AsyncHttpxConsul` with these settings (``await
        client.http.close()`` when done)."""
        return AsyncHttpxConsul(self)

    def __repr__(self) -> str:
        token = ", token='***'" if self.token else ""
        return (f"AgentSettings({self.base_url!r}, verify={self.verify!r}, "
                f"cert={self.cert!r}{token}, dc={self.dc!r}, timeout={self.timeout!r})")


def settings_of(client: object) -> AgentSettings | None:
    """The :class:`AgentSettings` of a py-consul client (any ``consul.base.Consul``:
    py-consul's own ``requests`` one, its aiohttp one, or ours), with its current
    token, datacenter and consistency; ``None`` for any other object."""
    if isinstance(client, HttpxConsul | AsyncHttpxConsul):
        return replace(client.settings, token=client.token or None, dc=client.dc,
                       consistency=client.consistency)
    if not isinstance(client, consul.base.Consul):
        return None
    http = client.http
    timeout = getattr(client, "connections_timeout", getattr(http, "connections_timeout", None))
    return AgentSettings(
        host=http.host, port=http.port, scheme=http.scheme, verify=http.verify,
        cert=http.cert, token=client.token or None, dc=client.dc,
        consistency=client.consistency, timeout=timeout,
    )


# --- the HTTPClient plug-ins -----------------------------------------------------------


def _text(response: httpx.Response) -> str:
    """The body as text (UTF-8 unless the answer names another charset), in one
    ``bytes.decode``: ten times faster than ``response.text`` on a 10 MB answer."""
    encoding = response.charset_encoding or "utf-8"
    try:
        return response.content.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return response.content.decode("utf-8", errors="replace")


class _HttpxHTTPClient(consul.base.HTTPClient):  # type: ignore[misc]  # py-consul is untyped
    """What the sync and async plug-ins share: everything but the sending itself."""

    _build: Callable[..., httpx.Request]  # the httpx client's build_request

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings.host, settings.port, settings.scheme, settings.verify,
                         settings.cert)
        self.settings = settings
        # Hooks for the one watch that uses a private client (sd.consul.watch):
        self.last_headers: Mapping[str, str] = {}
        """Headers of the last answer (the watch reads the ACL policy header)."""
        self.unchanged_at: int | None = None
        """A GET answered 200 at this ``X-Consul-Index`` is the same snapshot again:
        return ``(index, UNREAD)`` without decoding its body."""
        self.held_read_timeout: float | None = None
        """Bounds a plain read (no ``index``): the watch asks again rather than wait
        while a starting agent holds it (:attr:`sd.consul.index.WatchPolicy.read_timeout`)."""
        self.decode: Callable[[bytes], object] | None = None
        """Decodes the body of a GET answered 200 in place of py-consul's ``json.loads``
        (:func:`sd.consul.decode.decode_entries`); py-consul still judges the answer."""

    def _timeout(self, params: object, override: float | None) -> httpx.Timeout:
        base = override if override is not None else self.settings.timeout
        pairs = dict(params) if isinstance(params, Sequence | Mapping) else {}
        held = self.held_read_timeout
        if held is not None and "index" not in pairs:
            base = held if base is None else min(base, held)
        if base is None:
            return httpx.Timeout(None)
        read = base
        if "index" in pairs:
            wait = (consul.std.parse_duration(str(pairs["wait"])) if "wait" in pairs
                    else consul.std.DEFAULT_WAIT)
            read += wait + wait / 16
        return httpx.Timeout(base, read=read)

    def _request(
        self, method: str, path: str, params: Any, headers: Mapping[str, str] | None,
        data: str | bytes | None, override: float | None,
    ) -> httpx.Request:
        send_headers = dict(headers or {})
        kept: list[tuple[str, Any]] = []
        for name, value in list(params or ()):
            if name == "token":  # keep the token out of the URL (and out of httpx's log)
                send_headers.setdefault("X-Consul-Token", str(value))
            else:
                kept.append((name, value))
        timeout = self._timeout(kept, override)
        return self._build(method, self.uri(path, kept), headers=send_headers,
                           content=data if data else None, timeout=timeout)

    def _unread(self, method: str, response: httpx.Response) -> tuple[str, object] | None:
        """``(index, UNREAD)`` for an answer :attr:`unchanged_at` says need not be read."""
        self.last_headers = response.headers
        if self.unchanged_at is None or method != "GET" or response.status_code != 200:
            return None
        raw_index = response.headers.get("X-Consul-Index")
        if parse_index(raw_index) != self.unchanged_at:
            return None
        return raw_index, UNREAD

    def _answer(self, response: httpx.Response, raw: bool) -> consul.base.Response:
        body: str | bytes = response.content if raw else _text(response)
        return consul.base.Response(response.status_code, response.headers, body)

    def _send(self, callback: Any, method: str, path: str, params: Any,
              headers: Mapping[str, str] | None, data: str | bytes | None, raw: bool,
              connections_timeout: float | None) -> Any:
        """Send and judge one request: the answer (sync) or a coroutine of it (async)."""
        raise NotImplementedError

    def _judge(self, callback: Any, method: str, response: httpx.Response, raw: bool) -> Any:
        unread = self._unread(method, response)
        if unread is not None:
            return unread
        if self.decode is not None and method == "GET" and response.status_code == 200 \
                and not raw:
            # py-consul judges the answer (status, X-Consul-Index header) on an empty
            # list; the body itself goes to the watch's decoder (a 10 MB answer is
            # decoded once, and by msgspec when installed).  Only the watch's private
            # client sets `decode`, and it asks only health.service, whose callback
            # returns (index, the decoded list) (tests/consul/test_vendor_seams.py).
            index, _ = callback(consul.base.Response(200, response.headers, "[]"))
            return index, self.decode(response.content)
        return callback(self._answer(response, raw))

    # py-consul's HTTPClient verbs, the same for both plug-ins: each returns what
    # _send returns (the answer, or for the async plug-in a coroutine of it).

    def get(self, callback: Any, path: str, params: Any = None,
            headers: Mapping[str, str] | None = None, raw: bool = False,
            connections_timeout: float | None = None) -> Any:
        return self._send(callback, "GET", path, params, headers, None, raw, connections_timeout)

    def put(self, callback: Any, path: str, params: Any = None, data: str | bytes = "",
            headers: Mapping[str, str] | None = None,
            connections_timeout: float | None = None) -> Any:
        return self._send(callback, "PUT", path, params, headers, data, False, connections_timeout)

    def delete(self, callback: Any, path: str, params: Any = None, data: str | bytes = "",
               headers: Mapping[str, str] | None = None,
               connections_timeout: float | None = None) -> Any:
        return self._send(callback, "DELETE", path, params, headers, data, False,
                          connections_timeout)

    def post(self, callback: Any, path: str, params: Any = None, data: str | bytes = "",
             headers: Mapping[str, str] | None = None,
             connections_timeout: float | None = None) -> Any:
        return self._send(callback, "POST", path, params, headers, data, False,
                          connections_timeout)


def _closed() -> RuntimeError:
    return RuntimeError("the Consul client is closed")


def _log(request: httpx.Request, response: httpx.Response) -> None:
    """httpx's request line, on this module's logger (the client's own is skipped)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug('HTTP Request: %s %s "%d %s"', request.method, request.url,
                     response.status_code, response.reason_phrase)


class _SyncHTTPClient(_HttpxHTTPClient):
    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        options = settings.httpx_options()
        transport = options.get("transport")
        if transport is None:
            transport = httpx.HTTPTransport(verify=options["verify"], trust_env=False)
            options["transport"] = transport
        self._transport: httpx.BaseTransport = transport
        self._http = httpx.Client(**options)
        self._build = self._http.build_request

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def _send(self, callback: Any, method: str, path: str, params: Any,
              headers: Mapping[str, str] | None, data: str | bytes | None, raw: bool,
              connections_timeout: float | None) -> Any:
        if self._http.is_closed:
            raise _closed()
        request = self._request(method, path, params, headers, data, connections_timeout)
        # Straight to the client's transport: the client's auth, redirect, cookie and
        # hook machinery has nothing to do for Consul's API and costs a watch ~0.1 ms
        # per answer on the way to the Endpointer (bench/bench_propagation.py).
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        _log(request, response)
        return self._judge(callback, method, response, raw)

    def close(self) -> None:
        self._http.close()


class _AsyncHTTPClient(_HttpxHTTPClient):
    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        options = settings.httpx_options()
        transport = options.get("transport")
        if transport is None:
            # HTTP/1.1 over asyncio streams, not httpcore: an answer reaches the watch
            # ~0.5 ms sooner (sd.consul._http11, bench/bench_propagation.py)
            transport = Http11Transport(settings.host, settings.port, settings.ssl_context)
            options["transport"] = transport
        # Answers uncompressed: gzip made the agent spend ~0.3-0.5 ms compressing
        # each changed answer (a fresh compressor after an idle held query) and the
        # watch ~0.03 ms decompressing it, more than the bytes saved cost to send
        # from the (usually local) agent (bench/bench_propagation.py).
        options["headers"] = {"Accept-Encoding": "identity"}
        self._transport: httpx.AsyncBaseTransport = transport
        self._http = httpx.AsyncClient(**options)
        self._build = self._http.build_request

    async def _send(self, callback: Any, method: str, path: str, params: Any,
                    headers: Mapping[str, str] | None, data: str | bytes | None, raw: bool,
                    connections_timeout: float | None) -> Any:
        if self._http.is_closed:
            raise _closed()
        request = self._request(method, path, params, headers, data, connections_timeout)
        response = await self._transport.handle_async_request(request)  # as the sync twin
        try:
            await response.aread()
        finally:
            await response.aclose()
        _log(request, response)
        return self._judge(callback, method, response, raw)

    async def close(self) -> None:
        await self._http.aclose()


class _SettingsConsul(consul.base.Consul):  # type: ignore[misc]  # py-consul is untyped
    """A ``consul.Consul`` built from :class:`AgentSettings`."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        super().__init__(host=settings.host, port=settings.port, token=settings.token,
                         scheme=settings.scheme, consistency=settings.consistency,
                         dc=settings.dc, verify=settings.verify, cert=settings.cert)
        if settings.token is not None:
            self.token = settings.token  # an explicit token wins over CONSUL_HTTP_TOKEN

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` of the agent (never the token)."""
        return self.settings.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.base_url!r})"


class HttpxConsul(_SettingsConsul):
    """A py-consul ``consul.Consul`` whose requests go through ``httpx.Client``.

    Every py-consul call works as usual (``client.agent.service.register(...)``,
    ``client.health.service(...)``...).  :meth:`close` (or ``with``) closes its
    connections.  As thread-safe as ``httpx.Client``.  The ACL token is never
    part of its ``repr``.
    """

    def http_connect(self, host: str, port: int, scheme: str, verify: bool | str = True,
                     cert: object = None) -> _SyncHTTPClient:
        return _SyncHTTPClient(self.settings)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self.http.is_closed)

    def close(self) -> None:
        """Close the HTTP connections.  Idempotent."""
        self.http.close()

    def __enter__(self) -> HttpxConsul:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncHttpxConsul(_SettingsConsul):
    """The asyncio twin of :class:`HttpxConsul` (py-consul calls return coroutines).

    ``await aclose()`` (or ``async with``) closes its connections.  Use it from
    one event loop.
    """

    def http_connect(self, host: str, port: int, scheme: str, verify: bool | str = True,
                     cert: object = None) -> _AsyncHTTPClient:
        return _AsyncHTTPClient(self.settings)

    async def aclose(self) -> None:
        """Close the HTTP connections.  Idempotent."""
        await self.http.close()

    async def __aenter__(self) -> AsyncHttpxConsul:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
