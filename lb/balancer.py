"""The :class:`Balancer` protocol (go-kit's ``lb.Balancer``) and the optional
:class:`Picker` protocol that lets :func:`lb.retry` steer a balancer.

``Balancer.endpoint()`` is the whole contract: any object with it works with
:func:`lb.retry`.  A balancer that also implements :class:`Picker` names the
instance it picked and hears back how the attempt went, which is how a retry
avoids an instance that already failed in the same call and how a balancer
learns which instances to eject.  The built-in balancers are Pickers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple, Protocol, runtime_checkable

from kitsd.core.endpoint import Endpoint
from kitsd.sd.endpoint_set import EndpointSet

__all__ = ["Balancer", "EndpointSource", "Pick", "Picker", "SnapshotSource"]


@runtime_checkable
class Balancer(Protocol):
    """Picks one endpoint per call.

    ``endpoint()`` raises :class:`lb.NoEndpointsError` on an empty set, and lets the
    endpoint source's error (e.g. an invalidated :class:`sd.Endpointer`) through
    unchanged.
    """

    def endpoint(self) -> Endpoint: ...


class Pick(NamedTuple):
    """One pick: the endpoint, and the instance it calls.

    For sources that do not name their instances, ``instance`` is a stand-in
    unique among the endpoints alive (see :func:`lb.pool.identity_key`).
    """

    instance: str
    endpoint: Endpoint


@runtime_checkable
class Picker(Balancer, Protocol):
    """A balancer :func:`lb.retry` can steer (optional; the built-in balancers are).

    ``pick(exclude)`` avoids the instances in ``exclude`` (they failed earlier in
    the same call) while others remain; ``report(pick, error)`` tells the
    balancer how the attempt went (``error`` is ``None`` on success), so that it
    can eject failing instances.  Both are thread-safe in the built-in balancers.
    """

    def pick(self, exclude: Collection[str] = ()) -> Pick: ...

    def report(self, pick: Pick, error: BaseException | None) -> None: ...


@runtime_checkable
class EndpointSource(Protocol):
    """What balancers pick from: an :class:`sd.Endpointer`, or anything with ``endpoints()``."""

    def endpoints(self) -> list[Endpoint]: ...


@runtime_checkable
class SnapshotSource(EndpointSource, Protocol):
    """A source that also hands out immutable :class:`sd.EndpointSet` snapshots, the
    same object until the set changes (:class:`sd.Endpointer` does); balancers use
    it for O(1) picks keyed by instance."""

    def snapshot(self) -> EndpointSet: ...
