"""The :class:`EndpointSet`: one immutable snapshot of an Endpointer's endpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kitsd.core.errors import MisuseError
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo

# sd.endpoint.Endpoint, spelled out: this module stays pure (sd.endpoint imports asyncio).
_Endpoint = Callable[[Any], Any]

__all__ = ["EMPTY", "EndpointSet"]


@dataclass(frozen=True, slots=True, eq=False)
class EndpointSet:
    """The endpoints serving now, with the instance each one calls.

    ``instances`` is sorted and de-duplicated; ``endpoints[i]`` is the endpoint of
    ``instances[i]``.  Immutable, and the same object is handed out until the set
    changes, so a balancer can keep per-set work (its wrappers, its ring) keyed by
    identity and a pick costs O(1) whatever the number of instances.

    ``info`` maps instances to their :class:`~sd.InstanceInfo` (metadata the
    instancer published; it may also name instances whose factory failed);
    :meth:`info_of` gives the defaults for the others.  A metadata-only change
    gives a new set holding the same endpoints.
    """

    instances: tuple[str, ...] = ()
    endpoints: tuple[_Endpoint, ...] = ()
    info: Mapping[str, InstanceInfo] = field(default_factory=lambda: NO_INFO)

    def __post_init__(self) -> None:
        if len(self.instances) != len(self.endpoints):
            raise MisuseError(
                f"EndpointSet needs one endpoint per instance, got {len(self.instances)} "
                f"instances and {len(self.endpoints)} endpoints"
            )

    def info_of(self, instance: str) -> InstanceInfo:
        """The metadata of ``instance`` (the defaults when none was published)."""
        return self.info.get(instance, DEFAULT_INFO)

    def __len__(self) -> int:
        return len(self.endpoints)

    def __bool__(self) -> bool:
        return bool(self.endpoints)


#: The set with no endpoints.
EMPTY = EndpointSet()
