"""The etcd client boundary: client protocol, error mapping, endpoint revival, ``connect``.

Everything kitsd asks of an etcd client goes through this module, so the
instancer and the registrar never touch vendor types.  Clients from
etcd-sdk-python (module ``pyetcd``) and from python-etcd3 (module ``etcd3``)
are accepted as they are: both satisfy :class:`EtcdClient`.  Neither module is
imported until :func:`connect` builds a client, so ``import sd.etcd`` works
without them.

The "failed endpoint" pitfall
-----------------------------
python-etcd3 and its fork etcd-sdk-python remember a connection error by
marking the endpoint *failed* (``Endpoint.last_failed``) and then refuse every
call on it for ``Endpoint.time_retry`` seconds -- 300 by default -- with
``ValueError('Trying to use a failed node')`` (or ``NoServerAvailableError``
when failing over).  One etcd restart would blind a watcher for five minutes.
:func:`revive_endpoints` is the one place that undoes this; the watcher and the
registrar call it before every reconnect attempt, whether the client is the
user's or one :func:`connect` built.  See its docstring for the rule.

Authentication
--------------
Two more vendor traps, handled for clients :func:`connect` builds with a user
and password: the clients attach the token as gRPC call credentials, which gRPC
refuses to send over plain HTTP (every call fails UNAUTHENTICATED), so over
plain HTTP only the token metadata is kept; and etcd's simple tokens are
forgotten when a member restarts from a snapshot, so :func:`reauthenticate`
logs in again when etcd says "invalid auth token".  (A watch created with a
rejected token is reported by the clients as live -- watch id ``-1`` -- but
never delivers; the instancer checks for both.)

Errors
------
:func:`to_backend_error` maps vendor errors to :mod:`sd.errors`:
:class:`~sd.errors.PermissionDeniedError` when etcd refused the credentials or
the token, :class:`~sd.errors.RegistryUnavailableError` for everything else;
the vendor error is kept as ``__cause__``.  Messages are stable (they name the
endpoints, never credentials), so a registry that keeps failing the same way
is not re-published to subscribers as news.
"""

from __future__ import annotations

import importlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from sd.errors import (
    BackendError,
    InvalidInstanceError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from sd.etcd.revision import KeyValue, WatchEvent
from sd.instance import split_address

__all__ = [
    "DEFAULT_GRPC_OPTIONS",
    "EtcdClient",
    "close_client",
    "compacted_revision",
    "connect",
    "current_endpoint",
    "describe",
    "grant_lease",
    "is_auth_error",
    "is_not_found",
    "is_token_error",
    "keep_alive_once",
    "mark_failed",
    "probe_prefix",
    "read_prefix",
    "reauthenticate",
    "revive_endpoints",
    "summarize_error",
    "to_backend_error",
    "translate_response",
    "watch_prefix",
]

logger = logging.getLogger(f"kitsd.{__name__}")

#: gRPC channel options for clients :func:`connect` builds: reconnect quickly
#: after an etcd restart (gRPC's own default backs off up to 120 s), and send
#: keepalive pings on a live watch so a silently dead member is noticed within
#: ~15 s (etcd accepts pings every 5 s or slower by default).
DEFAULT_GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
)

# Seconds a failed endpoint is skipped by clients connect() builds (the vendor
# default is 300); with failover, a healthy endpoint is used meanwhile.
_TIME_RETRY = 2.0

_AUTH_CODES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})
_AUTH_DETAILS = ("authentication failed", "user name is empty", "invalid auth token",
                 "permission denied", "auth: ")


@runtime_checkable
class EtcdClient(Protocol):
    """What kitsd needs from an etcd client (``pyetcd`` or ``etcd3``, duck-typed).

    Watch callbacks are called on the client's own watch thread with a watch
    response, an exception, or ``None`` when the stream ended.
    """

    def get_prefix_response(self, key_prefix: str, **kwargs: Any) -> Any: ...

    def add_watch_prefix_callback(
        self, key_prefix: str, callback: Callable[[Any], object], **kwargs: Any
    ) -> Any: ...

    def cancel_watch(self, watch_id: Any) -> Any: ...

    def put(self, key: str, value: str, lease: Any = None, prev_kv: bool = False) -> Any: ...

    def delete(self, key: str, prev_kv: bool = False, return_response: bool = False) -> Any: ...

    def lease(self, ttl: int, lease_id: Any = None) -> Any: ...

    def refresh_lease(self, lease_id: int) -> Iterable[Any]: ...

    def revoke_lease(self, lease_id: int) -> Any: ...


# ---------------------------------------------------------------------------
# errors


def _status_name(error: BaseException) -> str | None:
    code_method = getattr(error, "code", None)
    if not callable(code_method):
        return None
    try:
        code = code_method()
    except Exception:  # noqa: BLE001 - a broken error object must not break the mapping
        return None
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else None


def _details(error: BaseException) -> str:
    details_method = getattr(error, "details", None)
    if callable(details_method):
        try:
            return str(details_method() or "")
        except Exception:  # noqa: BLE001 - a broken error object must not break the mapping
            return ""
    return ""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def summarize_error(error: BaseException) -> str:
    """A one-line description of a vendor error (status code and details, if gRPC)."""
    parts = []
    for item in _chain(error):
        status = _status_name(item)
        if status is not None:
            parts.append(f"{status}: {_details(item)}".rstrip(": "))
        else:
            parts.append(f"{type(item).__name__}: {item}".rstrip(": "))
    return " <- ".join(parts)


def is_auth_error(error: BaseException) -> bool:
    """Whether etcd refused our credentials, our token or the operation (permission)."""
    for item in _chain(error):
        if isinstance(item, PermissionDeniedError):
            return True
        status = _status_name(item)
        if status in _AUTH_CODES:
            return True
        if status == "INVALID_ARGUMENT":
            details = _details(item).lower()
            if any(marker in details for marker in _AUTH_DETAILS):
                return True
    return False


def is_token_error(error: BaseException) -> bool:
    """Whether etcd rejected the auth token (expired, or lost in an etcd restart)."""
    for item in _chain(error):
        status = _status_name(item)
        details = _details(item).lower()
        if status == "UNAUTHENTICATED" or "invalid auth token" in details:
            return True
    return False


def to_backend_error(error: BaseException, what: str) -> BackendError:
    """Map a vendor error to :mod:`sd.errors`; the caller raises it ``from error``.

    ``what`` names the operation and the registry (never credentials).  A
    :class:`~sd.errors.BackendError` is returned unchanged.
    """
    if isinstance(error, BackendError):
        return error
    if is_auth_error(error):
        return PermissionDeniedError(f"{what}: etcd refused the credentials or permission")
    return RegistryUnavailableError(f"{what}: etcd unavailable")


def compacted_revision(item: object) -> int | None:
    """The compaction revision if ``item`` says the watch's history was compacted, else ``None``.

    Recognises the clients' ``RevisionCompactedError`` and a raw watch response
    with ``compact_revision`` set.
    """
    for cls in type(item).__mro__:
        if cls.__name__ == "RevisionCompactedError":
            revision = getattr(item, "compacted_revision", 0)
            return int(revision) if isinstance(revision, int) else 0
    revision = getattr(item, "compact_revision", 0)
    if isinstance(revision, int) and revision > 0:
        return revision
    return None


# ---------------------------------------------------------------------------
# endpoints


def _endpoints(client: object) -> list[Any]:
    endpoints = getattr(client, "endpoints", None)
    if isinstance(endpoints, Mapping):
        return list(endpoints.values())
    if isinstance(endpoints, list | tuple):
        return list(endpoints)
    return []


def _is_marked_failed(endpoint: object) -> bool:
    is_failed = getattr(endpoint, "is_failed", None)
    if callable(is_failed):
        try:
            return bool(is_failed())
        except Exception:  # noqa: BLE001 - an unknown endpoint layout: treat as not marked
            return False
    last_failed = getattr(endpoint, "last_failed", 0)
    return bool(last_failed)


def revive_endpoints(client: object) -> list[str]:
    """Clear python-etcd3-style "failed endpoint" marks so the next call really tries the network.

    python-etcd3 and etcd-sdk-python skip an endpoint for ``time_retry``
    seconds (300 by default) after one connection error and refuse every call
    meanwhile (``ValueError('Trying to use a failed node')``).  The rule:

    * a client without failover uses one endpoint: every mark is cleared, so
      a retry after an etcd restart reaches the restarted server;
    * a client with failover keeps its marks while some endpoint is unmarked
      (the client moves to that one, which is what failover is for); when all
      are marked, all are cleared, so the client tries again instead of
      raising ``NoServerAvailableError`` for five minutes.

    Works on both layouts that exist (``client.endpoints`` as a mapping of
    ``Endpoint`` objects with ``last_failed``, or a sequence of them); a
    client without endpoint marks (older ``etcd3``) is left alone.  Returns the
    endpoints revived (for logging).  Safe to call from any thread: it only
    resets a float per endpoint.
    """
    endpoints = _endpoints(client)
    marked = [endpoint for endpoint in endpoints if _is_marked_failed(endpoint)]
    if not marked:
        return []
    if getattr(client, "failover", False) and len(marked) < len(endpoints):
        return []
    revived = []
    for endpoint in marked:
        try:
            endpoint.last_failed = 0
        except AttributeError:  # a read-only layout we do not know: leave it
            continue
        revived.append(str(getattr(endpoint, "netloc", endpoint)))
    if revived:
        logger.debug("etcd: cleared the failed mark of %s before reconnecting", revived)
    return revived


_CONNECTION_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})


def mark_failed(client: object, netloc: str | None, error: BaseException) -> bool:
    """Mark endpoint ``netloc`` failed after ``error`` broke a watch on it, so failover moves on.

    The clients mark an endpoint failed when a plain call fails, but not when
    a watch stream does; without this, the next call would go to the member
    that just died.  Only for clients with failover and connection-level
    errors; returns whether an endpoint was marked.
    """
    if netloc is None or not getattr(client, "failover", False):
        return False
    if _status_name(error) not in _CONNECTION_CODES:
        return False
    endpoints = getattr(client, "endpoints", None)
    endpoint = endpoints.get(netloc) if isinstance(endpoints, Mapping) else None
    fail = getattr(endpoint, "fail", None)
    if not callable(fail):
        return False
    fail()
    logger.debug("etcd: watch on %s broke (%s); marked it failed", netloc, _status_name(error))
    return True


def describe(client: object) -> str:
    """The client's endpoints as ``host:port,...`` for messages (never credentials)."""
    endpoints = _endpoints(client)
    if endpoints:
        return ",".join(str(getattr(endpoint, "netloc", "?")) for endpoint in endpoints)
    return type(client).__name__


def current_endpoint(client: object) -> str | None:
    """``host:port`` of the endpoint the client is using now, if it says."""
    endpoint = getattr(client, "endpoint_in_use", None)
    netloc = getattr(endpoint, "netloc", None)
    return netloc if isinstance(netloc, str) else None


# ---------------------------------------------------------------------------
# reads and watches


def read_prefix(client: EtcdClient, prefix: str) -> tuple[list[KeyValue], int]:
    """Every key under ``prefix`` and the revision of the read (vendor errors propagate)."""
    response = client.get_prefix_response(prefix)
    kvs = [KeyValue(bytes(kv.key), bytes(kv.value), int(kv.mod_revision)) for kv in response.kvs]
    return kvs, int(response.header.revision)


def probe_prefix(client: EtcdClient, prefix: str) -> int:
    """Read at most one key under ``prefix`` (keys only); returns the current revision.

    A cheap way to learn whether etcd is reachable and still accepts our token
    and permissions before resuming a watch.
    """
    response = client.get_prefix_response(prefix, keys_only=True, limit=1)
    return int(response.header.revision)


def watch_prefix(
    client: EtcdClient, prefix: str, start_revision: int, callback: Callable[[Any], object]
) -> Any:
    """Start a watch on ``prefix`` from ``start_revision``; returns the watch id."""
    return client.add_watch_prefix_callback(prefix, callback, start_revision=start_revision)


def _is_delete(event: object) -> bool:
    for cls in type(event).__mro__:
        if cls.__name__ == "DeleteEvent":
            return True
        if cls.__name__ == "PutEvent":
            return False
    kind = getattr(event, "type", None)
    return kind == 1 or getattr(kind, "name", None) == "DELETE"


def translate_response(response: object) -> list[WatchEvent]:
    """A watch response's events as :class:`~sd.etcd.revision.WatchEvent` values."""
    events = []
    for event in getattr(response, "events", ()) or ():
        key = bytes(event.key)
        revision = int(event.mod_revision)
        if _is_delete(event):
            events.append(WatchEvent("delete", key, revision))
        else:
            events.append(WatchEvent("put", key, revision, bytes(event.value)))
    return events


# ---------------------------------------------------------------------------
# leases


def grant_lease(client: EtcdClient, ttl: int) -> tuple[int, int]:
    """Grant a lease of ``ttl`` seconds; returns ``(lease_id, granted_ttl)``.

    etcd may grant more than asked (its minimum TTL is about 1.5 election timeouts).
    """
    lease = client.lease(ttl)
    lease_id = int(getattr(lease, "id", getattr(lease, "ID", 0)))
    granted = int(getattr(lease, "ttl", getattr(lease, "TTL", ttl)) or ttl)
    return lease_id, granted


def keep_alive_once(client: EtcdClient, lease_id: int) -> int:
    """Send one keep-alive for ``lease_id``; returns the remaining TTL (``<= 0``: lease gone).

    Raises the vendor error when etcd cannot be reached, and
    :class:`~sd.errors.RegistryUnavailableError` when the stream ended without an answer.
    """
    responses = list(client.refresh_lease(lease_id))
    if not responses:
        raise RegistryUnavailableError(f"etcd did not answer the keep-alive of lease {lease_id:x}")
    return int(responses[-1].TTL)


def is_not_found(error: BaseException) -> bool:
    """Whether ``error`` is etcd's NOT_FOUND (e.g. revoking a lease that already expired)."""
    return any(_status_name(item) == "NOT_FOUND" for item in _chain(error))


# ---------------------------------------------------------------------------
# building clients


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


def _split_endpoint(text: str) -> tuple[str, int]:
    """``(host, port)``; an IPv6 host keeps its brackets, as gRPC targets need them."""
    try:
        return split_address(text)
    except InvalidInstanceError as error:
        raise MisuseError(f"etcd endpoint must be host:port, not {text!r}") from error


# Credentials of clients connect() built, kept only to re-authenticate after
# etcd forgot our token (simple tokens do not survive an etcd restart).
_REAUTH: weakref.WeakKeyDictionary[Any, Callable[[], None]] = weakref.WeakKeyDictionary()
_REAUTH_LOCK = threading.Lock()


def reauthenticate(client: object) -> bool:
    """Fetch a new auth token for a client :func:`connect` built with credentials.

    Returns ``False`` for other clients (kitsd does not know their
    credentials).  Raises the vendor error if etcd refuses.
    """
    with _REAUTH_LOCK:
        renew = _REAUTH.get(client)
    if renew is None:
        return False
    renew()
    return True


def _install_reauth(
    module: ModuleType, client: Any, user: str, password: str, *, secure: bool
) -> None:
    try:
        vendor = importlib.import_module(f"{module.__name__}.client")
        grpc = importlib.import_module("grpc")
    except ImportError:
        return
    token_credentials = getattr(vendor, "EtcdTokenCallCredentials", None)
    if token_credentials is None or not hasattr(client, "_stubs"):
        return  # a layout we do not know: no re-authentication

    def renew() -> None:
        # The same steps the client's constructor takes; the watcher is dropped
        # because it captured the old token when it was created.
        request = module.etcdrpc.AuthenticateRequest(name=user, password=password)
        answer = client.authstub.Authenticate(request, client.timeout)
        client.metadata = (("token", answer.token),)
        if secure:
            client.call_credentials = grpc.metadata_call_credentials(
                token_credentials(answer.token)
            )
        old_watcher = client._stubs.pop("watcher", None)
        if old_watcher is not None:
            old_watcher.close()

    with _REAUTH_LOCK:
        _REAUTH[client] = renew


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
) -> Any:
    """Build an etcd client kitsd works well with (``pyetcd``, else ``etcd3``).

    ``endpoints`` (``["host:port", ...]``) overrides ``host``/``port`` and gives
    a client that fails over between cluster members.  ``timeout`` bounds every
    call, including the creation of a watch (the watch stream itself is not
    bounded).  The client reconnects quickly after an etcd restart (see
    :data:`DEFAULT_GRPC_OPTIONS`, merged under ``grpc_options``) and skips a
    failed member for ``time_retry`` seconds, not 300.  ``ca_cert`` (with
    ``cert_key``/``cert_cert`` for client certificates) switches to TLS.

    With ``user`` and ``password`` the client authenticates at once, so this
    raises :class:`~sd.errors.PermissionDeniedError` for refused credentials
    and :class:`~sd.errors.RegistryUnavailableError` when the member it tries
    first is unreachable.  Raises :class:`~sd.errors.MisuseError` (a
    ``ValueError``) for a malformed endpoint or when no client library is
    installed.  The caller owns the client: close it with :func:`close_client`.
    """
    module = _client_module()
    if endpoints:
        addresses = [_split_endpoint(item) for item in endpoints]
    else:
        addresses = [_split_endpoint(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")]
    if not addresses:
        raise MisuseError("connect() needs at least one etcd endpoint")
    if (user is None) != (password is None):
        raise MisuseError("etcd user and password go together")
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
            client = module.client(
                host=host, port=port, ca_cert=ca_cert, cert_key=cert_key, cert_cert=cert_cert,
                timeout=timeout, user=user, password=password, grpc_options=option_list,
            )
        else:
            client = _multi_endpoint_client(
                multi, endpoint_class, addresses, ca_cert=ca_cert, cert_key=cert_key,
                cert_cert=cert_cert, options=option_list, time_retry=time_retry,
                timeout=timeout, user=user, password=password,
            )
    except Exception as error:
        raise to_backend_error(error, f"connecting to etcd at {where}") from error
    if user is not None and password is not None:
        secure = ca_cert is not None
        if not secure:
            _drop_call_credentials(client)
        _install_reauth(module, client, user, password, secure=secure)
    return client


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


def _drop_call_credentials(client: Any) -> None:
    """Send the auth token as plain metadata on an insecure channel.

    The clients attach the token twice: as gRPC *call credentials*, which gRPC
    refuses to send over a plaintext channel (every call then fails with
    UNAUTHENTICATED "Established channel does not have a sufficient security
    level to transfer call credential"), and as request metadata, which is all
    etcd needs.  Over plain HTTP we keep the metadata only.
    """
    if getattr(client, "metadata", None) and hasattr(client, "call_credentials"):
        client.call_credentials = None


def close_client(client: object) -> None:
    """Close ``client`` (channels and its watch thread), logging instead of raising."""
    close = getattr(client, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception:
        logger.warning("closing etcd client %s failed", describe(client), exc_info=True)
    with _REAUTH_LOCK:
        _REAUTH.pop(client, None)
