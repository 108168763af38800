"""The :class:`Balancer` protocol (go-kit's ``lb.Balancer``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sd.endpoint import Endpoint

__all__ = ["Balancer", "EndpointSource"]


@runtime_checkable
class Balancer(Protocol):
    """Picks one endpoint per call.

    ``endpoint()`` raises :class:`lb.NoEndpointsError` on an empty set, and lets the
    endpoint source's error (e.g. an invalidated :class:`sd.Endpointer`) through
    unchanged.
    """

    def endpoint(self) -> Endpoint: ...


@runtime_checkable
class EndpointSource(Protocol):
    """What balancers pick from: an :class:`sd.Endpointer`, or anything with ``endpoints()``."""

    def endpoints(self) -> list[Endpoint]: ...
