"""``EtcdRegistrar``: keep ``key=value`` in etcd under a lease while the service lives.

Theory of operation
-------------------
``register()`` grants a lease of ``ttl`` seconds, puts ``key=value`` attached to
it, and starts a keep-alive thread that refreshes the lease every third of its
granted TTL.  If the process dies, nobody refreshes the lease and etcd deletes
the key when it expires: a crashed instance leaves discovery on its own.

The keep-alive thread treats etcd's answer "TTL 0" (the lease expired during a
partition, or someone revoked it) as a lost registration: it grants a new
lease and puts the key again.  Connection errors are retried with a short
jittered backoff (never longer than the refresh interval), letting the client
recover first (``Reconnecting.recover``: clear the vendor's failed-endpoint
marks, log in again), so a member restart or a leader change costs one or two refreshes, not the
registration.

Each refresh round also reads the key back (one ``keys_only`` range read of a
single key, when the client can read: ``sd.etcd.connect(...)``, a
``pyetcd``/``etcd3`` client, or an :class:`~sd.etcd.client.EtcdClient`).  A key
that is gone while the lease lives (an operator's ``etcdctl del``, a cleanup
job) or was put again by someone else (its ``mod_revision`` is no longer the
one of our own put: another value, or the same value without our lease) is put
back under the current lease, with one warning per restoration.  The bound: a
lost or changed key is restored within one refresh interval (a third of the
granted TTL) plus the round's two calls; while etcd fails, the round is retried
on the same backoff as the keep-alive.

``deregister()`` can never be undone by a restoration in flight: the thread
checks for the stop before writing, ``deregister()`` waits for it, and a
restoration is put under the lease ``deregister()`` then revokes, so a put that
lands after the delete goes with the lease (and one after the revocation fails).

``deregister()`` stops the thread, deletes the key and revokes the lease.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from typing import Final

from kitsd.core import validate
from kitsd.core.errors import MisuseError
from kitsd.sd.backoff import ETCD_KEEPALIVE, Backoff
from kitsd.sd.etcd.adapter import adapt
from kitsd.sd.etcd.client import EtcdLeases, EtcdReader, Reconnecting
from kitsd.sd.etcd.errors import is_not_found, is_token_error, summarize_error, to_backend_error
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import InstanceInfo
from kitsd.sd.instance_value import encode_value
from kitsd.sd.registrar import RegistrarContext
from kitsd.sd.transient import retry_transient

__all__ = ["EtcdRegistrar"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT: Final = 2.0


class EtcdRegistrar(RegistrarContext):
    """Registers ``value`` (an instance string) at ``key`` under a lease of ``ttl`` seconds.

    ``register()`` grants the lease, puts the key and starts the keep-alive
    thread; ``deregister()`` stops the thread, deletes the key and revokes the
    lease.  Both are idempotent, and the registrar can be registered again
    after deregistering.  As a context manager it registers on enter and
    deregisters on exit.  A lease lost while registered (expired during a
    partition, revoked) is re-granted and the key re-put; a key deleted or
    overwritten behind the registrar's back while the lease lives is put back
    under the lease within one refresh interval (a third of the granted TTL),
    when the client can read keys (see the module docstring).

    The value is stored normalised (``LOCALHOST:80`` → ``localhost:80``).  With
    ``info`` (an :class:`~sd.InstanceInfo`) it is stored in the JSON form
    ``{"address": "host:port", "weight": 3, "tags": [...], "meta": {...}}`` that
    :class:`~sd.etcd.EtcdInstancer` reads back as the instance's metadata; without,
    as plain ``host:port`` (what go-kit and older readers expect).  etcd
    counts TTLs in whole seconds and has a minimum (about two seconds with
    default timings), so ``ttl`` is rounded up and may be raised by etcd.

    Raises :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) for an empty key,
    an empty value, a value that is not a ``host:port`` instance
    (:class:`~kitsd.core.errors.InvalidInstanceError`, naming it) or a ``ttl`` that is
    not positive, and ``TypeError`` for an ``info`` that is not an ``InstanceInfo`` or
    a ``client`` that is not an etcd client
    (``sd.etcd.connect(...)``, a ``pyetcd``/``etcd3`` client, or an
    :class:`~sd.etcd.client.EtcdLeases`).  ``register()`` and ``deregister()`` raise
    :class:`~kitsd.core.errors.RegistryUnavailableError` or
    :class:`~kitsd.core.errors.PermissionDeniedError` (chained from the client's error)
    when etcd still fails them after ``retry_for`` seconds of retrying a transient
    unavailability (a leader election; ``0`` tries once); after a failed
    ``deregister()`` the registrar is still deregistered and the key disappears
    when the lease expires.  Thread-safe;
    the client stays the caller's.
    """

    def __init__(
        self, client: object, key: str, value: str, *, ttl: float = 10.0,
        retry_for: float = 10.0, info: InstanceInfo | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise MisuseError(f"etcd registrar key must be a non-empty string, not {key!r}")
        if not isinstance(value, str) or not value.strip():
            raise MisuseError(f"etcd registrar value must be a non-empty string, not {value!r}")
        if info is not None and not isinstance(info, InstanceInfo):
            raise TypeError(f"etcd registrar info must be an sd.InstanceInfo or None, "
                            f"not {type(info).__name__}")
        normalized = normalize_instance(value)
        validate.seconds("etcd registrar ttl", ttl)
        validate.seconds("etcd registrar retry_for", retry_for, zero=True)
        adapted = adapt(client)  # TypeError for an object that is not an etcd client
        if not isinstance(adapted, EtcdLeases):
            raise TypeError(f"{type(client).__name__} cannot keep keys under etcd leases")
        self._client = adapted
        self._recovery = adapted if isinstance(adapted, Reconnecting) else None
        self._reader = adapted if isinstance(adapted, EtcdReader) else None
        self._name = str(adapted)
        self._retry_for = float(retry_for)
        self._key = key
        self._instance = normalized
        self._info = info
        self._value = encode_value(normalized, info)
        self._ttl = float(ttl)
        self._lease_ttl = max(1, math.ceil(ttl))
        self._lock = threading.Lock()  # serialises register/deregister
        self._state_lock = threading.Lock()  # guards the lease fields, shared with the thread
        self._lease_id: int | None = None
        self._granted_ttl = self._lease_ttl
        self._registrations = 0
        self._put_revision = 0  # mod_revision of our last put (0: the client did not say)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def client(self) -> object:
        """The etcd client as the registrar uses it (adapted: an
        :class:`~sd.etcd.client.EtcdLeases`, also an :class:`~sd.etcd.client.EtcdReader`
        when it can read); still the caller's."""
        return self._client

    @property
    def key(self) -> str:
        """The registered key."""
        return self._key

    @property
    def value(self) -> str:
        """The stored value: the normalised instance string, or its JSON form with
        the metadata when ``info`` was given."""
        return self._value

    @property
    def instance(self) -> str:
        """The registered instance (normalised)."""
        return self._instance

    @property
    def info(self) -> InstanceInfo | None:
        """The metadata registered with the instance (``None``: a plain value)."""
        return self._info

    @property
    def ttl(self) -> float:
        """The requested lease TTL in seconds."""
        return self._ttl

    @property
    def lease_id(self) -> int | None:
        """The current lease id while registered, else ``None``."""
        with self._state_lock:
            return self._lease_id

    @property
    def registrations(self) -> int:
        """How many times the key was put: once per ``register()`` plus once per lost
        lease and once per key restored after it was deleted or overwritten."""
        with self._state_lock:
            return self._registrations

    @property
    def registered(self) -> bool:
        """Whether ``register()`` is in effect (the keep-alive thread is running)."""
        with self._lock:
            return self._thread is not None

    def register(self) -> None:
        """Grant the lease, put the key and start keeping the lease alive; idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            retry_transient(self._register_once, within=self._retry_for,
                            what=f"registering {self._key!r} in etcd")
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._keep_alive,
                args=(self._stopping,),
                name=f"kitsd-etcd-lease {self._key}",
                daemon=True,
            )
            self._thread.start()
        logger.info("registered %r=%r in etcd (lease ttl %ds)", self._key, self._value,
                    self._granted_ttl)

    def deregister(self) -> None:
        """Stop the keep-alive, delete the key and revoke the lease; idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
            with self._state_lock:
                lease_id, self._lease_id = self._lease_id, None
            retry_transient(lambda: self._deregister_once(lease_id), within=self._retry_for,
                            what=f"deregistering {self._key!r} from etcd")
        logger.info("deregistered %r from etcd", self._key)

    def _recover(self, error: BaseException | None) -> None:
        if self._recovery is not None:
            self._recovery.recover(error)

    def _register_once(self) -> None:
        try:
            self._recover(None)
            try:
                self._grant_and_put()
            except Exception as error:
                # etcd forgot our token (restart): a client connect() built logs in again
                if not is_token_error(error) or self._recovery is None:
                    raise
                self._recover(error)
                self._grant_and_put()
        except Exception as error:
            raise to_backend_error(error, f"registering {self._key!r} in etcd at "
                                          f"{self._name}") from error

    def _deregister_once(self, lease_id: int | None) -> None:
        try:
            self._recover(None)
            self._client.delete(self._key)
            if lease_id is not None:
                self._revoke(lease_id)
        except Exception as error:
            raise to_backend_error(error, f"deregistering {self._key!r} from etcd at "
                                          f"{self._name}") from error

    def _revoke(self, lease_id: int) -> None:
        try:
            self._client.revoke(lease_id)
        except Exception as error:
            if not is_not_found(error):  # already expired or revoked: fine
                raise

    def _grant_and_put(self) -> None:
        lease_id, granted = self._client.grant(self._lease_ttl)
        revision = self._client.put(self._key, self._value, lease=lease_id)
        with self._state_lock:
            self._lease_id = lease_id
            self._granted_ttl = granted
            self._registrations += 1
            self._put_revision = revision if isinstance(revision, int) else 0

    def _key_damage(self) -> str | None:
        """How our key differs from our last put: ``"deleted"``, ``"overwritten"``, or
        ``None`` when it is intact (or the client cannot read)."""
        if self._reader is None:
            return None
        with self._state_lock:
            put_revision = self._put_revision
        key = self._key.encode()
        # The key itself is the first key of its own prefix: one key, nothing else read.
        page = self._reader.read_prefix(key, limit=1, keys_only=put_revision > 0,
                                        timeout=self._interval())
        kv = page.kvs[0] if page.kvs and page.kvs[0].key == key else None
        if kv is None:
            return "deleted"
        if put_revision > 0:
            intact = kv.mod_revision == put_revision
        else:
            intact = kv.value == self._value.encode()
        return None if intact else "overwritten"

    def _restore(self, lease_id: int) -> None:
        """Put the key back under ``lease_id`` (the lease ``deregister()`` revokes)."""
        revision = self._client.put(self._key, self._value, lease=lease_id)
        with self._state_lock:
            self._registrations += 1
            self._put_revision = revision if isinstance(revision, int) else 0

    def _interval(self) -> float:
        with self._state_lock:
            return max(0.1, self._granted_ttl / 3.0)

    def _keep_alive(self, stopping: threading.Event) -> None:
        backoff = Backoff(curve=ETCD_KEEPALIVE.capped(self._interval()), rng=random.Random())
        delay = self._interval()
        error: BaseException | None = None
        while not stopping.wait(delay):
            try:
                self._recover(error)
                error = None
                lease_id = self.lease_id
                remaining = self._client.keep_alive(lease_id) if lease_id is not None else 0
                if stopping.is_set():
                    break
                if remaining <= 0:
                    logger.warning(
                        "etcd lease of %r was lost (expired or revoked); registering again",
                        self._key,
                    )
                    self._grant_and_put()
                elif lease_id is not None and (damage := self._key_damage()) is not None:
                    if stopping.is_set():
                        break
                    self._restore(lease_id)
                    logger.warning(
                        "etcd key %r was %s behind the registrar's back; put it back under"
                        " its lease", self._key, damage,
                    )
                backoff.reset()
                delay = self._interval()
            except Exception as failure:  # noqa: BLE001 - the keep-alive must outlive any failure
                if stopping.is_set():
                    break
                error = failure
                backoff.curve = ETCD_KEEPALIVE.capped(self._interval())
                delay = backoff.next_delay()
                logger.warning(
                    "keeping %r alive in etcd at %s failed (%s); retrying in %.2fs",
                    self._key, self._name, summarize_error(failure), delay,
                )
        logger.debug("etcd keep-alive of %r stopped", self._key)

    def __repr__(self) -> str:
        return f"EtcdRegistrar(key={self._key!r}, value={self._value!r}, ttl={self._ttl:g})"
