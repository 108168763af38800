"""What every httpx client of one factory shares, built once per factory.

An ``httpx.Client`` built from keyword arguments makes its own transport, and
that transport its own ``ssl.SSLContext`` with the whole certificate bundle
loaded: about 800 KiB and 20 ms per client, even for ``http://``.  A factory
serving 10,000 instances paid that 10,000 times.  Here the factory decides once:

* the TLS context is built once, from the user's ``verify`` / ``cert`` /
  ``trust_env``, and handed to every client (and to proxy transports httpx
  mounts from the environment).  An ``http`` factory that asked for nothing
  about TLS gets a context that trusts no certificate, built without reading
  any file: it makes no TLS connection, and if a redirect it follows led to
  ``https`` anyway, verification would fail rather than be skipped;
* each client still gets its own transport (its own connection pool, so
  ``limits`` hold per instance and closing an endpoint closes only its
  connections), built from the shared settings and made to end its I/O by the
  retry deadline (:mod:`sd.http._deadline`);
* a ``transport`` the user gives is shared by every client, as before.

The arguments are checked once, by building one client at construction; its
errors name ``client_kwargs``.
"""

from __future__ import annotations

import importlib.util
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from kitsd.core import validate
from kitsd.core.errors import MisuseError
from kitsd.sd.http import _deadline

__all__ = ["ClientSettings"]

logger = logging.getLogger(__name__)

_sniffio_checked = False

# The httpx.Client arguments that configure its default transport.
_TRANSPORT_ARGS = ("verify", "trust_env", "http1", "http2", "limits")


def _ssl_context(scheme: str, kwargs: dict[str, Any]) -> ssl.SSLContext:
    """The one TLS context for every client; removes ``verify``/``cert`` from ``kwargs``."""
    # On an http factory, TLS matters only if the user set it up or follows redirects.
    wants_tls = (
        scheme == "https" or "verify" in kwargs or "cert" in kwargs
        or bool(kwargs.get("follow_redirects"))
    )
    verify = kwargs.pop("verify", True)
    cert = kwargs.pop("cert", None)
    if not wants_tls:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts nothing
    if isinstance(verify, ssl.SSLContext) and cert is None:
        return verify
    # httpx's own recipe (certifi, SSL_CERT_FILE/SSL_CERT_DIR under trust_env), run once.
    return httpx.create_ssl_context(
        verify=verify, cert=cert, trust_env=kwargs.get("trust_env", True)
    )


def _check_sniffio() -> None:
    """Warn once if ``sniffio`` is missing: httpcore 1.0 then retries ``import sniffio``
    (a failed search of ``sys.path``) about four times per async request, ~0.3 ms,
    and anyio 4.x no longer installs it.  kitsd depends on it; this catches
    installs made without dependencies."""
    global _sniffio_checked
    if _sniffio_checked:
        return
    _sniffio_checked = True
    if importlib.util.find_spec("sniffio") is None:
        logger.warning(
            "sniffio is not installed: every async HTTP request will retry importing it "
            "(about 0.3 ms each); pip install sniffio"
        )


def _check_timeout(value: object) -> None:
    """httpx takes any timeout and fails at the first request: check it now."""
    try:
        timeout = httpx.Timeout(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise TypeError(f"client_kwargs: timeout: {error}") from error
    for phase in ("connect", "read", "write", "pool"):
        # None: no limit
        validate.optional_seconds(f"client_kwargs: timeout {phase}", getattr(timeout, phase))


class ClientSettings:
    """Builds the httpx clients of one factory from settings prepared once.

    ``client(base_url)`` / ``async_client(base_url)`` make one client (no I/O).
    Raises ``TypeError`` / :class:`kitsd.core.errors.MisuseError` at construction for
    ``client_kwargs`` httpx refuses.  Immutable after construction; thread-safe.
    """

    __slots__ = ("_client_kwargs", "_transport_kwargs", "asynchronous")

    def __init__(
        self, scheme: str, client_kwargs: Mapping[str, Any] | None, *, asynchronous: bool
    ) -> None:
        if client_kwargs is None:
            client_kwargs = {}
        elif not isinstance(client_kwargs, Mapping):
            raise TypeError(
                f"client_kwargs must be a mapping, not {type(client_kwargs).__name__}"
            )
        kwargs = dict(client_kwargs)
        if "base_url" in kwargs:
            raise MisuseError("client_kwargs must not set base_url: it is built from the instance")
        if "timeout" in kwargs:
            _check_timeout(kwargs["timeout"])
        if asynchronous:
            _check_sniffio()
        self.asynchronous = asynchronous
        self._transport_kwargs: dict[str, Any] | None = None
        if kwargs.get("transport") is None:
            kwargs.pop("transport", None)
            try:
                kwargs["verify"] = _ssl_context(scheme, kwargs)
            except (OSError, ssl.SSLError, ValueError) as error:
                raise MisuseError(f"client_kwargs: cannot set up TLS: {error}") from error
            self._transport_kwargs = {
                name: kwargs[name] for name in _TRANSPORT_ARGS if name in kwargs
            }
        self._client_kwargs = kwargs
        self._check(scheme)

    def _check(self, scheme: str) -> None:
        """Build (and drop) one client, so that bad ``client_kwargs`` fail here."""
        try:
            if self.asynchronous:
                self.async_client(f"{scheme}://client-kwargs.invalid")
            else:
                client, transport = self.client(f"{scheme}://client-kwargs.invalid")
                if transport is not None:  # ours; never close the user's
                    client.close()
        except (TypeError, AttributeError) as error:  # httpx reads attributes of wrong types
            raise TypeError(f"client_kwargs: {error}") from error
        except ValueError as error:
            raise MisuseError(f"client_kwargs: {error}") from error
        # The probes opened nothing (no connection, thread or task): dropping them is enough.

    def client(self, base_url: str) -> tuple[httpx.Client, httpx.HTTPTransport | None]:
        """A new ``httpx.Client`` for ``base_url``, and the transport made for it
        (``None`` when it uses the user's)."""
        kwargs = self._client_kwargs
        if self._transport_kwargs is None:  # the user's transport, shared
            return httpx.Client(base_url=base_url, **kwargs), None
        transport = httpx.HTTPTransport(**self._transport_kwargs)
        _deadline.install(transport)
        return httpx.Client(base_url=base_url, transport=transport, **kwargs), transport

    def async_client(
        self, base_url: str
    ) -> tuple[httpx.AsyncClient, httpx.AsyncHTTPTransport | None]:
        """The async twin of :meth:`client`."""
        kwargs = self._client_kwargs
        if self._transport_kwargs is None:
            return httpx.AsyncClient(base_url=base_url, **kwargs), None
        transport = httpx.AsyncHTTPTransport(**self._transport_kwargs)
        _deadline.install_async(transport)
        return httpx.AsyncClient(base_url=base_url, transport=transport, **kwargs), transport
