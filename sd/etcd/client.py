"""What kitsd asks of an etcd client: two small protocols and the values they return.

go-kit's ``sd/etcdv3`` driver talks to etcd through a small ``Client``
interface; so does kitsd's.  :class:`EtcdReader` is what the instancer needs
(read a prefix, watch it from a revision, cancel the watch) and
:class:`EtcdLeases` what the registrar needs (grant, keep alive, put, delete,
revoke).  :class:`EtcdClient` is both.  Everything crossing these protocols is
kitsd's own value types (:class:`RangePage`, :class:`WatchBatch`,
:class:`Compacted`, :class:`~sd.etcd.revision.KeyValue`), never vendor objects.

:class:`Reconnecting` is optional: a client that implements it is told when a
call failed (so it can undo vendor state, log in again) and can wake a
backoff early when its connection comes back.

:class:`sd.etcd.adapter.VendorClient` implements all three over a
``pyetcd``/``etcd3`` client; tests script odd answers with small fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kitsd.sd.etcd.revision import KeyValue, WatchEvent

__all__ = [
    "Compacted",
    "EtcdClient",
    "EtcdLeases",
    "EtcdReader",
    "RangePage",
    "Reconnecting",
    "WatchBatch",
    "WatchCallback",
    "WatchItem",
]


@dataclass(frozen=True, slots=True)
class RangePage:
    """One answer of a range read: keys in key order, the store revision, more to come?

    ``revision`` is the header revision of the answer (etcd's current revision,
    also when the read was made at an older one); ``more`` says whether keys
    past the last one were left out because of the read's ``limit``.
    """

    kvs: tuple[KeyValue, ...]
    revision: int
    more: bool = False


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch response: its events (empty for a progress notification) and revision."""

    events: tuple[WatchEvent, ...]
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Compacted:
    """The watch's start revision was compacted away at ``revision``: re-read."""

    revision: int


#: What a watch callback receives: a batch, a compaction, the error that broke
#: the stream, or ``None`` when the stream ended without saying why.
WatchItem = WatchBatch | Compacted | BaseException | None
WatchCallback = Callable[[WatchItem], object]


@runtime_checkable
class EtcdReader(Protocol):
    """Reading and watching a key prefix (what :class:`~sd.etcd.EtcdInstancer` needs)."""

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
        """Keys under ``prefix`` (strictly after ``after``) in key order, at ``revision``
        (0: now), at most ``limit`` (0: all); raises the client's error, ``timeout``
        seconds at most (``None``: the client's own)."""
        ...

    def watch(self, prefix: bytes, start_revision: int, callback: WatchCallback) -> object:
        """Watch ``prefix`` from ``start_revision``; returns a watch id for :meth:`cancel`.

        ``callback`` is called on the client's thread; it must not block.
        """
        ...

    def cancel(self, watch_id: object) -> None:
        """Cancel a watch (an unknown or finished one is ignored)."""
        ...


@runtime_checkable
class EtcdLeases(Protocol):
    """Keys under leases (what :class:`~sd.etcd.EtcdRegistrar` needs)."""

    def grant(self, ttl: int) -> tuple[int, int]:
        """Grant a lease of ``ttl`` seconds; returns ``(lease_id, granted_ttl)``."""
        ...

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease once; returns the remaining TTL (``<= 0``: the lease is gone)."""
        ...

    def put(self, key: str, value: str | bytes, *, lease: int | None = None) -> int:
        """Put ``key=value`` (attached to ``lease``); returns the revision of the put."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key`` (a missing key is fine)."""
        ...

    def revoke(self, lease_id: int) -> None:
        """Revoke a lease and delete its keys (raises NOT_FOUND for an unknown lease)."""
        ...


@runtime_checkable
class EtcdClient(EtcdReader, EtcdLeases, Protocol):
    """Everything the etcd driver asks of a client."""


@runtime_checkable
class Reconnecting(Protocol):
    """Optional hooks of a client for recovering after failures."""

    def recover(self, error: BaseException | None) -> None:
        """Called before retrying after ``error`` (``None``: before a first try)."""
        ...

    def wait_connected(self, timeout: float, wake: threading.Event) -> None:
        """Block up to ``timeout`` seconds or until ``wake`` is set; set ``wake`` early
        when the connection to etcd comes back."""
        ...
