"""Per-instance metadata: :class:`InstanceInfo`.

Registries hold more than an address: Consul services carry tags, ``Meta`` and
``Weights``; etcd values may be JSON with a weight.  Instancers that know it publish
an :class:`InstanceInfo` per instance alongside the instance strings (which stay
``host:port``); instances without an entry have the defaults.  Factories and
balancers read it (``lb.Weighted`` reads ``weight``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from sd.errors import MisuseError

__all__ = ["DEFAULT_INFO", "NO_INFO", "InstanceInfo"]

_EMPTY_META: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """Frozen metadata of one instance: ``weight`` (an int >= 0; 0 takes it out of
    weighted rotation), ``tags`` and ``meta`` (string keys and values).

    Raises ``TypeError``/:class:`~sd.errors.MisuseError` naming a bad field.
    """

    weight: int = 1
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: _EMPTY_META)

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise TypeError(f"weight must be an int, got {type(self.weight).__name__}")
        if self.weight < 0:
            raise MisuseError(f"weight must be >= 0, got {self.weight}")
        if isinstance(self.tags, str) or not all(isinstance(tag, str) for tag in self.tags):
            raise TypeError("tags must be an iterable of strings")
        if not isinstance(self.tags, tuple):
            object.__setattr__(self, "tags", tuple(self.tags))
        if not isinstance(self.meta, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in self.meta.items()
        ):
            raise TypeError("meta must be a mapping of strings to strings")
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __hash__(self) -> int:
        return hash((self.weight, self.tags, tuple(sorted(self.meta.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstanceInfo):
            return NotImplemented
        return (self.weight, self.tags, dict(self.meta)) == (
            other.weight, other.tags, dict(other.meta))


#: The metadata of an instance nobody said anything about.
DEFAULT_INFO: Final = InstanceInfo()
#: An empty instance -> info mapping.
NO_INFO: Final[Mapping[str, InstanceInfo]] = MappingProxyType({})
