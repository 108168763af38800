"""``connect()``: an etcd client tuned for kitsd, and ``close_client()``.

:func:`connect` builds a ``pyetcd`` client (else an ``etcd3`` one) and returns
it wrapped in a :class:`~sd.etcd.adapter.VendorClient` that owns it and its
credentials; the vendor client stays reachable as ``.vendor``.  Neither client
library is imported until :func:`connect` runs, so ``import sd.etcd`` works
without them.

Tuning, compared with a client built with the vendor's defaults:

* gRPC reconnects quickly after an etcd restart (100 ms doubling to 1 s; gRPC's
  default backs off up to 120 s), and gives each connection attempt
  :data:`CONNECT_TIMEOUT` seconds (gRPC's ``grpc.min_reconnect_backoff_ms`` is its
  minimum connect timeout, not a backoff: at 100 ms an etcd that took 0.3 s to
  accept a connection was an error first, and one that took 1.5 s was never
  reached);
* gRPC keepalive pings every :data:`KEEPALIVE_TIME` seconds while a call
  (a watch) is open, and drops a connection whose ping is not answered within
  :data:`KEEPALIVE_TIMEOUT` seconds (grpcio pings every 2 hours by default).
  Not more often, and not without calls: etcd's server enforces a minimum of
  5 s between pings (``--grpc-keepalive-min-time``) and refuses pings on a
  connection without streams; a client that breaks either rule is cut off
  with GOAWAY "too_many_pings";
* a failed cluster member is skipped for ``time_retry`` seconds (the vendor
  default is 300);
* with a user and password over plain HTTP, the token is sent as metadata
  (gRPC would refuse call credentials), and a token etcd forgot is renewed;
* a watcher the client drops (failover, new token) cancels its stream, which etcd
  would otherwise keep open with its thread for the life of the client
  (:func:`~sd.etcd.adapter.cancel_abandoned_watches`), and a watcher's request queue
  is unbounded, so cancelling many watches while its stream ends cannot deadlock it
  (the vendor's queue holds 10 and is filled with its lock held).

The instancer's liveness probe (:class:`~sd.etcd.EtcdInstancer`'s
``liveness_timeout``) bounds how long a partition goes unreported for any
client; the keepalive settings above additionally make gRPC drop a dead
connection on its own.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import shown_address, without_value
from kitsd.sd.etcd.adapter import (
    Login,
    VendorClient,
    _drop_call_credentials,
    cancel_abandoned_watches,
    describe,
)
from kitsd.sd.etcd.errors import to_backend_error
from kitsd.sd.instance import split_address

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_GRPC_OPTIONS",
    "KEEPALIVE_TIME",
    "KEEPALIVE_TIMEOUT",
    "close_client",
    "connect",
]

logger = logging.getLogger(__name__)

#: Seconds between gRPC keepalive pings (etcd's server-side floor is 5 s: keep a margin).
KEEPALIVE_TIME: Final = 10.0
#: Seconds a keepalive ping may go unanswered before gRPC drops the connection.
KEEPALIVE_TIMEOUT: Final = 5.0
#: Seconds gRPC gives one connection attempt (TCP, TLS and HTTP/2 handshakes) at least.
CONNECT_TIMEOUT: Final = 5.0

#: gRPC channel options for clients :func:`connect` builds (see the module docstring).
DEFAULT_GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", int(CONNECT_TIMEOUT * 1000)),  # the connect timeout
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT * 1000)),
    ("grpc.keepalive_permit_without_calls", 0),  # etcd: PermitWithoutStream false
    ("grpc.http2.max_pings_without_data", 0),
)

# Seconds a failed endpoint is skipped by clients connect() builds (the vendor
# default is 300); with failover, a healthy endpoint is used meanwhile.
_TIME_RETRY: Final = 2.0


def _client_module() -> ModuleType:
    for name in ("pyetcd", "etcd3"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MisuseError(
        "the etcd driver needs etcd-sdk-python (module pyetcd) or etcd3:"
        " pip install 'kitsd[etcd]'"
    )


def _split_endpoint(text: object) -> tuple[str, int]:
    """``(host, port)``; an IPv6 host keeps its brackets, as gRPC targets need them."""
    try:
        return split_address(text)
    except InvalidInstanceError as error:
        raise MisuseError(f"etcd endpoint must be host:port, not {shown_address(text)}"
                          f" ({error.reason})") from None


def _seconds(name: str, value: object, *, allow_none: bool, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    validate.seconds(f"connect() {name}", value, zero=allow_zero)


def _check_file(name: str, path: object) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"connect() {name} must be a file path, not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not os.path.isfile(text):
        raise MisuseError(f"connect() {name} is not a readable file: {text!r}")
    return text


def connect(
    host: str = "127.0.0.1",
    port: int = 2379,
    *,
    endpoints: Sequence[str] | None = None,
    user: str | None = None,
    password: str | None = None,
    timeout: float | None = 5.0,
    ca_cert: str | None = None,
    cert_key: str | None = None,
    cert_cert: str | None = None,
    grpc_options: Sequence[tuple[str, Any]] | None = None,
    time_retry: float = _TIME_RETRY,
) -> VendorClient:
    """Build an etcd client kitsd works well with (``pyetcd``, else ``etcd3``).

    ``endpoints`` (``["host:port", ...]``) overrides ``host``/``port`` and gives
    a client that fails over between cluster members.  ``timeout`` (finite
    seconds > 0, or ``None`` for no bound) bounds every call, including the
    creation of a watch (the watch stream itself is not bounded).  ``ca_cert``
    switches to TLS, verifying the server against that CA file; ``cert_cert``
    and ``cert_key`` (together) add a client certificate.  ``grpc_options`` are
    merged over :data:`DEFAULT_GRPC_OPTIONS`; a failed member is skipped for
    ``time_retry`` seconds.

    With ``user`` and ``password`` the client authenticates at once, so this
    raises :class:`~kitsd.core.errors.PermissionDeniedError` for refused credentials
    and :class:`~kitsd.core.errors.RegistryUnavailableError` when the member it tries
    first is unreachable.  Raises :class:`~kitsd.core.errors.MisuseError` (a
    ``ValueError``) naming the argument for a malformed endpoint, a bad
    timeout, a missing certificate file, or when no client library is
    installed; ``TypeError`` for arguments of the wrong type.

    Returns a :class:`~sd.etcd.adapter.VendorClient` (the vendor client is its
    ``.vendor``); close it with ``close()`` or :func:`close_client`.
    """
    _seconds("timeout", timeout, allow_none=True)
    _seconds("time_retry", time_retry, allow_none=False, allow_zero=True)
    if endpoints is not None and (isinstance(endpoints, str)
                                  or not isinstance(endpoints, Sequence)):
        raise TypeError("connect() endpoints must be a list of 'host:port', not "
                        f"{shown_address(endpoints)}")
    if endpoints:
        addresses = [_split_endpoint(item) for item in endpoints]
    else:
        if not isinstance(host, str) or not host:
            raise MisuseError(
                f"connect() host must be a non-empty string, not {shown_address(host)}")
        try:
            validate.integer("connect() port", port, minimum=1, maximum=65535)
        except MisuseError as error:  # a string here may be a password typed in the wrong place
            raise type(error)(without_value(error)) from None
        addresses = [_split_endpoint(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")]
    if (user is None) != (password is None):
        raise MisuseError("connect() user and password go together")
    if (cert_key is None) != (cert_cert is None):
        raise MisuseError("connect() cert_key and cert_cert go together")
    if cert_cert is not None and ca_cert is None:
        raise MisuseError("connect() cert_cert/cert_key need ca_cert (TLS)")
    ca_cert = _check_file("ca_cert", ca_cert)
    cert_key = _check_file("cert_key", cert_key)
    cert_cert = _check_file("cert_cert", cert_cert)
    module = _client_module()
    options = dict(DEFAULT_GRPC_OPTIONS)
    options.update(dict(grpc_options or ()))
    option_list = list(options.items())
    multi = getattr(module, "MultiEndpointEtcd3Client", None)
    endpoint_class = getattr(module, "Endpoint", None)
    where = ",".join(f"{h}:{p}" for h, p in addresses)
    if (multi is None or endpoint_class is None) and len(addresses) > 1:
        raise MisuseError(f"{module.__name__} cannot fail over between endpoints")
    try:
        if multi is None or endpoint_class is None:
            host, port = addresses[0]
            vendor = module.client(
                host=host, port=port, ca_cert=ca_cert, cert_key=cert_key, cert_cert=cert_cert,
                timeout=timeout, user=user, password=password, grpc_options=option_list,
            )
        else:
            vendor = _multi_endpoint_client(
                multi, endpoint_class, addresses, ca_cert=ca_cert, cert_key=cert_key,
                cert_cert=cert_cert, options=option_list, time_retry=time_retry,
                timeout=timeout, user=user, password=password,
            )
    except Exception as error:
        raise to_backend_error(error, f"connecting to etcd at {where}") from error
    cancel_abandoned_watches(vendor)  # a dropped watcher would keep its stream and thread
    login = None
    if user is not None and password is not None:
        secure = ca_cert is not None
        if not secure:
            _drop_call_credentials(vendor)
        login = Login(user, password, secure)
    return VendorClient(vendor, login=login, owned=True)


def _multi_endpoint_client(
    multi: Any,
    endpoint_class: Any,
    addresses: list[tuple[str, int]],
    *,
    ca_cert: str | None,
    cert_key: str | None,
    cert_cert: str | None,
    options: list[tuple[str, Any]],
    time_retry: float,
    timeout: float | None,
    user: str | None,
    password: str | None,
) -> Any:
    creds = multi.get_secure_creds(ca_cert, cert_key, cert_cert) if ca_cert else None
    endpoints = [
        endpoint_class(host, port, secure=creds is not None, creds=creds,
                       time_retry=time_retry, opts=options)
        for host, port in addresses
    ]
    try:
        return multi(endpoints=endpoints, timeout=timeout, user=user, password=password,
                     failover=True)
    except BaseException:
        for endpoint in endpoints:
            endpoint.close()
        raise


def close_client(client: object) -> None:
    """Close ``client``: a :func:`connect` result, or a vendor client; never raises."""
    if isinstance(client, VendorClient):
        client.close()
        return
    close = getattr(client, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception:
        logger.warning("closing etcd client %s failed", describe(client), exc_info=True)
