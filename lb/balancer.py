"""The :class:`Balancer` protocol (go-kit's ``lb.Balancer``) and the optional
:class:`Picker` protocol that lets :func:`lb.retry` steer a balancer.

``Balancer.endpoint()`` is the whole contract: any object with it works with
:func:`lb.retry`.  A balancer that also implements :class:`Picker` names the
instance it picked and hears back how the attempt went, which is how a retry
avoids an instance that already failed in the same call and how a balancer
learns which instances to eject.  The built-in balancers are Pickers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from typing_extensions import TypeVar

from kitsd.core.endpoint import Endpoint
from kitsd.sd.endpoint_set import EndpointSet

__all__ = ["Balancer", "E", "E_co", "EndpointSource", "Pick", "Picker", "SnapshotSource"]


#: The kind of endpoint a balancer hands out (``Callable[[Req], Resp]``, or its async
#: form); unsaid, any endpoint.  :func:`lb.retry` keeps its request and response types.
E_co = TypeVar("E_co", covariant=True, default=Endpoint)
#: The same, for the balancer classes (``lb.RoundRobin[Callable[[int], User]]``):
#: covariant, so a balancer of typed endpoints is a balancer of endpoints.
E = TypeVar("E", covariant=True, default=Endpoint)


@runtime_checkable
class Balancer(Protocol[E_co]):
    """Picks one endpoint per call.

    ``endpoint()`` raises :class:`lb.NoEndpointsError` on an empty set, and lets the
    endpoint source's error (e.g. an invalidated :class:`sd.Endpointer`) through
    unchanged.
    """

    def endpoint(self) -> E_co: ...


class Pick(NamedTuple):
    """One pick: the endpoint, and the instance it calls.

    For sources that do not name their instances, ``instance`` is a stand-in
    unique among the endpoints alive (see :func:`lb.pool.identity_key`).
    """

    instance: str
    endpoint: Endpoint


@runtime_checkable
class Picker(Balancer[E_co], Protocol[E_co]):
    """A balancer :func:`lb.retry` can steer (optional; the built-in balancers are).

    ``pick(exclude)`` avoids the instances in ``exclude`` (they failed earlier in
    the same call) while others remain; ``report(pick, error)`` tells the
    balancer how the attempt went (``error`` is ``None`` on success), so that it
    can eject failing instances.  Both are thread-safe in the built-in balancers.
    """

    def pick(self, exclude: Collection[str] = ()) -> Pick: ...

    def report(self, pick: Pick, error: BaseException | None) -> None: ...


@runtime_checkable
class EndpointSource(Protocol[E_co]):
    """What balancers pick from: an :class:`sd.Endpointer`, or anything with ``endpoints()``."""

    def endpoints(self) -> Sequence[E_co]: ...


@runtime_checkable
class SnapshotSource(EndpointSource[E_co], Protocol[E_co]):
    """A source that also hands out immutable :class:`sd.EndpointSet` snapshots, the
    same object until the set changes (:class:`sd.Endpointer` does); balancers use
    it for O(1) picks keyed by instance."""

    def snapshot(self) -> EndpointSet: ...
