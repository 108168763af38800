"""``VendorClient``: kitsd's etcd client protocol over a ``pyetcd`` or ``etcd3`` client.

The driver speaks :mod:`sd.etcd.client`'s protocols; this module is the only
one that touches a vendor client.  It accepts any client object of
etcd-sdk-python (module ``pyetcd``) or python-etcd3 (module ``etcd3``) --
yours, or one :func:`sd.etcd.connect` built (which also hands over the
credentials, kept by the adapter to log in again).

Vendor workarounds
------------------
Each workaround is a private function of this module, named for what it does,
and ``tests/etcd/test_adapter.py`` checks that the vendor attributes it relies
on still exist on the installed client (so a vendor release that removes one
fails a test, not a production watch), and that the installed release is the
one verified: etcd-sdk-python 0.0.7 on grpcio 1.85.3 / protobuf 7.36.2
(``etcd-sdk-python>=0.0.7,<0.0.8`` is the range to pin):

* :func:`_clear_failed_marks` -- the clients remember a connection error by
  marking the endpoint failed (``Endpoint.last_failed``) and refuse every call
  on it for ``Endpoint.time_retry`` seconds (300 by default) with
  ``ValueError('Trying to use a failed node')``.  One etcd restart would blind
  a watch for five minutes, so before a retry the marks are cleared: all of
  them for a client without failover; for a failover client only once every
  endpoint is marked (while one is usable, failover is what moves us there).
* :func:`_mark_failed` -- a broken watch stream or a read made by this module
  does not mark its endpoint failed, so a failover client would go back to the
  member that just died; it is marked (public ``Endpoint.fail()``) and the
  client's public ``channel`` property is read once, which moves a failover
  client to a usable endpoint and drops the stubs cached for the dead one.
* :func:`_range_with_deadline` -- the clients bound every call by one
  client-wide ``timeout`` (``None`` by default: forever).  A liveness probe must
  answer within seconds, so reads call the client's ``kvstub.Range`` with their
  own deadline (a ``RangeRequest`` from the vendor's ``etcdrpc``), the call
  credentials and metadata the client would send.  Without that layout, the
  public ``get_range_response`` is used (the client's timeout applies).
* :func:`_replace_token` -- etcd's simple auth tokens are forgotten when a
  member restarts; the clients never log in again.  For clients
  :func:`~sd.etcd.connect` built with a user and password, the adapter does
  what the vendor constructor does (``Authenticate``, then ``metadata`` and
  ``call_credentials``) and replaces the client's watcher (public ``watcher``
  property and ``get_watcher()``), which captured the old token.
* :func:`_drop_call_credentials` -- the clients attach the token as gRPC call
  credentials, which gRPC refuses to send over plain HTTP (every call fails
  UNAUTHENTICATED), as well as metadata, which is all etcd needs: over plain
  HTTP only the metadata is kept.
* :func:`_channels` -- the gRPC channels of the client's endpoints
  (``Endpoint.channel``), watched for connectivity so a backoff ends the
  moment the connection is back (:meth:`VendorClient.wait_connected`).
* :func:`cancel_abandoned_watches` -- a client drops its watcher (its one gRPC
  watch stream and the thread reading it) when it fails over or logs in again,
  and "closes" it by ending only the request side of the stream.  etcd keeps a
  watch stream whose client stopped sending open until the client cancels it, so
  every failover left a thread and a stream (through a black-holed network: a
  socket too) for the life of the client -- a chaos run cutting the client off its
  registry once grew it by 6 threads and 13 file descriptors for good.  For the
  clients :func:`~sd.etcd.connect` builds, each watcher made by the client's
  public ``get_watcher()`` records the stream call its private ``_watch_stub``
  makes and cancels it when the watcher is closed; watches still on it hear
  ``CANCELLED`` and resume on the new one.
* :func:`_unbounded_request_queues` -- a watcher queues its requests (create, cancel,
  the ``None`` that ends the stream) on a ``queue.Queue(maxsize=10)`` that only its
  live gRPC stream drains, and puts on it with its lock held: in ``cancel()``,
  ``close()`` and, once the stream ended, in its thread's own clean-up.  When the
  stream stopped draining (it ended, or ``close()`` half-closed it) with ten requests
  queued -- many watches cancelled at once, on a loaded machine -- the next put
  blocked for good with the lock held: the watcher's thread never ended, and every
  later ``cancel_watch``/``close`` on the client hung (``kitsd watch`` ignored Ctrl-C
  for 10 s and more; tests saw a ``pyetcd_watch`` thread left).  For the clients
  :func:`~sd.etcd.connect` builds, every request queue of a watcher (the first, and
  the fresh one its thread makes for the next stream) is made unbounded.
* watch id ``-1`` -- a watch etcd refused at creation (a rejected token) is
  reported by the clients as live with id ``-1`` but never delivers;
  :meth:`VendorClient.watch` raises :class:`~kitsd.core.errors.PermissionDeniedError`.

Thread-safe: calls go straight to the vendor client (itself thread-safe); the
adapter's own state is a lock-guarded flag.
"""

from __future__ import annotations

import functools
import importlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.etcd.client import (
    Compacted,
    EtcdLeases,
    EtcdReader,
    RangePage,
    WatchBatch,
    WatchCallback,
)
from kitsd.sd.etcd.errors import compacted_revision, is_connection_error, is_token_error
from kitsd.sd.etcd.paging import prefix_end
from kitsd.sd.etcd.revision import KeyValue, WatchEvent

__all__ = ["VENDOR_METHODS", "Login", "VendorClient", "adapt", "cancel_abandoned_watches",
           "describe"]

logger = logging.getLogger(__name__)

# grpcio's connectivity polling thread (started by ``channel.subscribe``) keeps
# watching a channel for up to 0.2 s after the last unsubscribe, and raises in its
# thread ("Cannot monitor channel state: Channel closed!") if the channel is closed
# meanwhile: close() waits out that window after a wait_connected().
_GRPC_POLL_GRACE = 0.25

#: Public methods a vendor client object must have to be adapted.
VENDOR_METHODS: Final = ("get_range_response", "add_watch_prefix_callback", "cancel_watch",
                         "put", "delete", "lease", "refresh_lease", "revoke_lease")

#: Bound on a read when neither the caller nor the client gives one.
DEFAULT_READ_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Login:
    """Credentials a :class:`VendorClient` logs in with again after etcd forgot its token.

    ``repr`` hides the password.
    """

    user: str
    password: str = field(repr=False)
    secure: bool = False


def describe(vendor: object) -> str:
    """The client's endpoints as ``host:port,...`` for messages (never credentials)."""
    endpoints = _endpoints(vendor)
    if endpoints:
        return ",".join(str(getattr(endpoint, "netloc", "?")) for endpoint in endpoints)
    return type(vendor).__name__


class VendorClient:
    """:class:`~sd.etcd.client.EtcdClient` (and ``Reconnecting``) over a vendor client.

    ``vendor`` is a ``pyetcd`` or ``etcd3`` client object; ``login`` the
    credentials to log in with again when etcd forgets the token (only
    :func:`~sd.etcd.connect` knows them); ``owned`` says whether :meth:`close`
    closes the vendor client.  Raises ``TypeError`` for an object that is not
    an etcd client.
    """

    def __init__(self, vendor: Any, *, login: Login | None = None, owned: bool = False) -> None:
        missing = [name for name in VENDOR_METHODS if not callable(getattr(vendor, name, None))]
        if missing:
            raise TypeError(f"{type(vendor).__name__} is not an etcd client (no {missing})")
        self._vendor = vendor
        self._login = login
        self._owned = owned
        self._lock = threading.Lock()
        self._relogin = False  # etcd rejected our token: log in before the next call
        self._closed = False
        self._polled_until = 0.0  # see _GRPC_POLL_GRACE

    @property
    def vendor(self) -> Any:
        """The ``pyetcd``/``etcd3`` client underneath, for calls kitsd does not make."""
        return self._vendor

    # -- EtcdReader ---------------------------------------------------------

    def read_prefix(
        self,
        prefix: bytes,
        *,
        after: bytes | None = None,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        timeout: float | None = None,
    ) -> RangePage:
        """See :meth:`sd.etcd.client.EtcdReader.read_prefix`."""
        start = prefix if after is None else after + b"\0"
        end = prefix_end(prefix)
        if timeout is None:
            timeout = getattr(self._vendor, "timeout", None) or DEFAULT_READ_TIMEOUT
        try:
            response = _range_with_deadline(
                self._vendor, start, end, revision=revision, limit=limit, keys_only=keys_only,
                timeout=timeout)
        except Exception as error:
            self._failed(error)
            raise
        kvs = tuple(KeyValue(bytes(kv.key), bytes(kv.value), int(kv.mod_revision))
                    for kv in response.kvs)
        return RangePage(kvs, int(response.header.revision), bool(getattr(response, "more", 0)))

    def watch(self, prefix: bytes, start_revision: int, callback: WatchCallback) -> object:
        """See :meth:`sd.etcd.client.EtcdReader.watch`."""
        netloc = _current_netloc(self._vendor)

        def deliver(response: object) -> None:
            if isinstance(response, BaseException):
                compact = compacted_revision(response)
                if compact is not None:
                    callback(Compacted(compact))
                    return
                if is_connection_error(response):
                    _mark_failed(self._vendor, netloc)
                callback(response)
                return
            if response is None:
                callback(None)
                return
            compact = compacted_revision(response)
            if compact is not None:
                callback(Compacted(compact))
                return
            callback(_translate(response))

        watch_id = self._vendor.add_watch_prefix_callback(
            prefix, deliver, start_revision=start_revision)
        if isinstance(watch_id, int) and watch_id < 0:
            with self._lock:
                self._relogin = True
            raise PermissionDeniedError(
                f"etcd refused the watch at {describe(self._vendor)}"
                " (permission denied or an invalid auth token)")
        return watch_id

    def cancel(self, watch_id: object) -> None:
        """See :meth:`sd.etcd.client.EtcdReader.cancel`."""
        self._vendor.cancel_watch(watch_id)

    # -- EtcdLeases ---------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        """See :meth:`sd.etcd.client.EtcdLeases.grant`."""
        lease = self._call(self._vendor.lease, ttl)
        lease_id = int(getattr(lease, "id", getattr(lease, "ID", 0)))
        granted = int(getattr(lease, "ttl", getattr(lease, "TTL", ttl)) or ttl)
        return lease_id, granted

    def keep_alive(self, lease_id: int) -> int:
        """See :meth:`sd.etcd.client.EtcdLeases.keep_alive`."""
        responses = self._call(lambda: list(self._vendor.refresh_lease(lease_id)))
        if not responses:
            raise RegistryUnavailableError(
                f"etcd did not answer the keep-alive of lease {lease_id:x}")
        return int(responses[-1].TTL)

    def put(self, key: str, value: str | bytes, *, lease: int | None = None) -> int:
        """See :meth:`sd.etcd.client.EtcdLeases.put`."""
        response = self._call(self._vendor.put, key, value, lease=lease)
        header = getattr(response, "header", None)
        return int(getattr(header, "revision", 0) or 0)

    def delete(self, key: str) -> None:
        """See :meth:`sd.etcd.client.EtcdLeases.delete`."""
        self._call(self._vendor.delete, key)

    def revoke(self, lease_id: int) -> None:
        """See :meth:`sd.etcd.client.EtcdLeases.revoke`."""
        self._call(self._vendor.revoke_lease, lease_id)

    # -- Reconnecting -------------------------------------------------------

    def recover(self, error: BaseException | None) -> None:
        """Undo vendor state left by failures before the next try (see the module docstring).

        Clears failed-endpoint marks; logs in again if etcd rejected our token
        (``error`` says so, or a watch was refused) and the credentials are known.
        Raises the vendor error if logging in fails.
        """
        revived = _clear_failed_marks(self._vendor)
        if revived:
            logger.debug("etcd: cleared the failed mark of %s before retrying", revived)
        with self._lock:
            relogin = self._relogin or (error is not None and is_token_error(error))
            self._relogin = False
        if relogin and self._login is not None:
            _replace_token(self._vendor, self._login)
            logger.info("etcd: logged in again at %s as %r", describe(self._vendor),
                        self._login.user)

    def wait_connected(self, timeout: float, wake: threading.Event) -> None:
        """Wait up to ``timeout`` s, or until ``wake`` is set; set ``wake`` when a channel
        that was not connected becomes READY (the server is back).

        A channel already READY when the wait starts does not end it (the last
        call failed on it anyway), so a server that answers with errors is
        retried on the backoff, not in a loop.  The channel is not asked to
        connect (``try_to_connect=False``): after the failed call it is in
        TRANSIENT_FAILURE and reconnects on its own, and a pending connect
        request would make grpcio's polling thread touch the channel once
        more after we unsubscribed -- possibly after the client was closed.
        """
        channels = _channels(self._vendor)
        if not channels:
            wake.wait(timeout)
            return
        grpc = importlib.import_module("grpc")
        ready = grpc.ChannelConnectivity.READY
        subscriptions: list[tuple[Any, Callable[[Any], None]]] = []

        def watcher() -> Callable[[Any], None]:
            seen_down = False

            def on_change(state: Any) -> None:
                nonlocal seen_down
                if state != ready:
                    seen_down = True
                elif seen_down:
                    wake.set()

            return on_change

        try:
            for channel in channels:
                callback = watcher()
                channel.subscribe(callback, try_to_connect=False)
                subscriptions.append((channel, callback))
            wake.wait(timeout)
        finally:
            for channel, callback in subscriptions:
                try:
                    channel.unsubscribe(callback)
                except Exception:
                    logger.debug("unsubscribing from an etcd channel failed", exc_info=True)
            if subscriptions:
                with self._lock:
                    self._polled_until = time.monotonic() + _GRPC_POLL_GRACE

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the vendor client if this adapter owns it (built by ``connect``); idempotent."""
        with self._lock:
            if self._closed or not self._owned:
                return
            self._closed = True
            left = self._polled_until - time.monotonic()
        if left > 0:  # grpcio's polling thread still watches the channel: let it end first
            time.sleep(left)
        try:
            self._vendor.close()
        except Exception:
            logger.warning("closing etcd client %s failed", describe(self._vendor), exc_info=True)

    def __str__(self) -> str:
        return describe(self._vendor)

    def __repr__(self) -> str:
        user = "" if self._login is None else f", user={self._login.user!r}"
        return f"VendorClient({describe(self._vendor)!r}{user})"

    # -- helpers ------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            self._failed(error)
            raise

    def _failed(self, error: BaseException) -> None:
        if is_token_error(error):
            with self._lock:
                self._relogin = True
        if is_connection_error(error):
            _mark_failed(self._vendor, _current_netloc(self._vendor))


def adapt(client: object) -> EtcdReader | EtcdLeases:
    """``client`` as one of kitsd's client protocols (:mod:`sd.etcd.client`).

    A :class:`VendorClient` (what :func:`~sd.etcd.connect` returns) or any
    object implementing :class:`~sd.etcd.client.EtcdReader` or
    :class:`~sd.etcd.client.EtcdLeases` is used as it is (the caller checks
    the one it needs); a ``pyetcd``/``etcd3`` client object is wrapped in a new
    :class:`VendorClient` (which does not close it).  Raises ``TypeError`` for
    anything else.
    """
    if isinstance(client, VendorClient):
        return client
    if all(callable(getattr(client, name, None)) for name in VENDOR_METHODS):
        return VendorClient(client)
    if isinstance(client, EtcdReader | EtcdLeases):
        return client
    raise TypeError(
        f"{type(client).__name__} is not an etcd client: pass a pyetcd/etcd3 client,"
        " sd.etcd.connect(...), or an object implementing sd.etcd.client.EtcdClient")


# ---------------------------------------------------------------------------
# translation


def _is_delete(event: object) -> bool:
    for cls in type(event).__mro__:
        if cls.__name__ == "DeleteEvent":
            return True
        if cls.__name__ == "PutEvent":
            return False
    kind = getattr(event, "type", None)
    return kind == 1 or getattr(kind, "name", None) == "DELETE"


def _translate(response: object) -> WatchBatch:
    events = []
    for event in getattr(response, "events", ()) or ():
        key = bytes(event.key)
        revision = int(event.mod_revision)
        if _is_delete(event):
            events.append(WatchEvent("delete", key, revision))
        else:
            events.append(WatchEvent("put", key, revision, bytes(event.value)))
    header = getattr(response, "header", None)
    return WatchBatch(tuple(events), int(getattr(header, "revision", 0) or 0))


# ---------------------------------------------------------------------------
# vendor workarounds (each guarded by tests/etcd/test_adapter.py)


def _endpoints(vendor: object) -> list[Any]:
    endpoints = getattr(vendor, "endpoints", None)
    if isinstance(endpoints, Mapping):
        return list(endpoints.values())
    if isinstance(endpoints, list | tuple):
        return list(endpoints)
    return []


def _current_netloc(vendor: object) -> str | None:
    try:
        endpoint = getattr(vendor, "endpoint_in_use", None)
    except Exception:  # noqa: BLE001 - a property of a layout we do not know
        return None
    netloc = getattr(endpoint, "netloc", None)
    return netloc if isinstance(netloc, str) else None


def _is_marked_failed(endpoint: object) -> bool:
    is_failed = getattr(endpoint, "is_failed", None)
    if callable(is_failed):
        try:
            return bool(is_failed())
        except Exception:  # noqa: BLE001 - an unknown endpoint layout: treat as not marked
            return False
    return bool(getattr(endpoint, "last_failed", 0))


def _clear_failed_marks(vendor: object) -> list[str]:
    """Clear ``Endpoint.last_failed`` marks (see the module docstring); returns the endpoints."""
    endpoints = _endpoints(vendor)
    marked = [endpoint for endpoint in endpoints if _is_marked_failed(endpoint)]
    if not marked:
        return []
    if getattr(vendor, "failover", False) and len(marked) < len(endpoints):
        return []
    revived = []
    for endpoint in marked:
        try:
            endpoint.last_failed = 0
        except AttributeError:  # a read-only layout we do not know: leave it
            continue
        revived.append(str(getattr(endpoint, "netloc", endpoint)))
    return revived


def _mark_failed(vendor: object, netloc: str | None) -> bool:
    """Mark endpoint ``netloc`` failed on a failover client, so the next call goes elsewhere."""
    if netloc is None or not getattr(vendor, "failover", False):
        return False
    endpoints = getattr(vendor, "endpoints", None)
    endpoint = endpoints.get(netloc) if isinstance(endpoints, Mapping) else None
    fail = getattr(endpoint, "fail", None)
    if not callable(fail):
        return False
    fail()
    try:
        _ = getattr(vendor, "channel", None)  # fails over, dropping the cached stubs
    except Exception:  # noqa: BLE001 - every endpoint marked: recover() clears them
        logger.debug("etcd: no usable endpoint left after %s failed", netloc)
    logger.debug("etcd: a call to %s failed at the connection level; marked it failed", netloc)
    return True


def _etcdrpc(vendor: object) -> ModuleType | None:
    """The vendor's ``etcdrpc`` module (request classes), if its layout is the known one."""
    roots = [type(vendor).__module__.split(".")[0], "pyetcd", "etcd3"]
    for root in roots:
        module = sys.modules.get(root)
        rpc = getattr(module, "etcdrpc", None) if module is not None else None
        if isinstance(rpc, ModuleType) and hasattr(rpc, "RangeRequest"):
            return rpc
    return None


def _range_with_deadline(
    vendor: Any, start: bytes, end: bytes, *, revision: int, limit: int, keys_only: bool,
    timeout: float,
) -> Any:
    """A ``Range`` call bounded by ``timeout`` (see the module docstring)."""
    rpc = _etcdrpc(vendor)
    if rpc is None or not hasattr(vendor, "kvstub"):
        return vendor.get_range_response(start, end, limit=limit or None,
                                         revision=revision or None, keys_only=keys_only)
    request = rpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision,
                               keys_only=keys_only)
    return vendor.kvstub.Range(request, timeout, credentials=vendor.call_credentials,
                               metadata=vendor.metadata)


def _replace_token(vendor: Any, login: Login) -> None:
    """Log in again as the vendor constructor does, and drop the watcher holding the old token."""
    rpc = _etcdrpc(vendor)
    if rpc is None:
        return
    answer = vendor.authstub.Authenticate(
        rpc.AuthenticateRequest(name=login.user, password=login.password), vendor.timeout)
    vendor.metadata = (("token", answer.token),)
    if login.secure:
        grpc = importlib.import_module("grpc")
        plugin = getattr(sys.modules.get(type(vendor).__module__), "EtcdTokenCallCredentials",
                         None)
        if plugin is not None:
            vendor.call_credentials = grpc.metadata_call_credentials(plugin(answer.token))
    old_watcher = vendor.watcher
    vendor.watcher = vendor.get_watcher()
    old_watcher.close()


def cancel_abandoned_watches(vendor: Any) -> bool:
    """Make the watchers ``vendor`` creates cancel their stream when closed (see the
    module docstring); ``False`` (nothing done) for a client of another layout."""
    make = getattr(vendor, "get_watcher", None)
    if not callable(make) or "get_watcher" in vars(vendor):
        return False

    def get_watcher() -> Any:
        watcher = make()
        _unbounded_request_queues(watcher)
        stub = getattr(watcher, "_watch_stub", None)
        close = getattr(watcher, "close", None)
        if stub is None or not callable(getattr(stub, "Watch", None)) or not callable(close):
            return watcher
        recorder = _RecordingStub(stub)
        watcher._watch_stub = recorder

        def close_and_cancel() -> None:
            try:
                close()
            finally:
                recorder.cancel()

        watcher.close = close_and_cancel
        return watcher

    vendor.get_watcher = get_watcher
    return True


def _unbounded(requests: object) -> object:
    if isinstance(requests, queue.Queue):
        with requests.mutex:
            requests.maxsize = 0  # Queue.put never blocks then
    return requests


@functools.cache
def _unbounded_class(cls: type) -> type:
    """``cls`` with a ``_request_queue`` property that makes each queue set unbounded."""

    def get(self: Any) -> Any:
        return self.__dict__["_request_queue"]

    def set_(self: Any, value: Any) -> None:
        self.__dict__["_request_queue"] = _unbounded(value)

    return type(cls.__name__, (cls,), {
        "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "_request_queue": property(get, set_),
    })


def _unbounded_request_queues(watcher: Any) -> bool:
    """Make every ``_request_queue`` ``watcher`` has or gets unbounded (see the module
    docstring); ``False`` (nothing done) for a watcher of another layout."""
    requests = vars(watcher).get("_request_queue") if hasattr(watcher, "__dict__") else None
    if not isinstance(requests, queue.Queue):
        return False
    # The thread's own `self._request_queue = queue.Queue(maxsize=10)` goes through set_.
    cls: type = type(watcher)
    watcher.__class__ = _unbounded_class(cls)
    watcher._request_queue = requests
    return True


class _RecordingStub:
    """A watcher's gRPC stub that remembers the stream calls it made, to cancel them."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self._lock = threading.Lock()
        self._calls: list[Any] = []
        self._cancelled = False

    def Watch(self, *args: Any, **kwargs: Any) -> Any:  # the stub's method name
        call = self._stub.Watch(*args, **kwargs)
        with self._lock:
            self._calls.append(call)
            cancelled = self._cancelled
        if cancelled:  # closed before the watcher's thread got here
            _cancel_call(call)
        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls, self._calls = self._calls, []
        for call in calls:
            _cancel_call(call)


def _cancel_call(call: Any) -> None:
    cancel = getattr(call, "cancel", None)
    if callable(cancel):
        try:
            cancel()
        except Exception:  # the stream is ending either way
            logger.debug("cancelling an abandoned etcd watch stream failed", exc_info=True)


def _drop_call_credentials(vendor: Any) -> None:
    """Keep the token as metadata only, on an insecure channel (see the module docstring)."""
    if getattr(vendor, "metadata", None) and hasattr(vendor, "call_credentials"):
        vendor.call_credentials = None


def _channels(vendor: object) -> list[Any]:
    """The gRPC channels of the client's endpoints (or its one ``channel`` attribute)."""
    channels = [getattr(endpoint, "channel", None) for endpoint in _endpoints(vendor)]
    found = [channel for channel in channels if callable(getattr(channel, "subscribe", None))]
    if found or _endpoints(vendor):
        return found
    channel = vars(vendor).get("channel") if hasattr(vendor, "__dict__") else None
    return [channel] if callable(getattr(channel, "subscribe", None)) else []
