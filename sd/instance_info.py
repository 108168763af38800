"""Per-instance metadata: :class:`InstanceInfo`.

Registries hold more than an address: Consul services carry tags, ``Meta`` and
``Weights``; etcd values may be JSON with a weight.  Instancers that know it publish
an :class:`InstanceInfo` per instance alongside the instance strings (which stay
``host:port``); instances without an entry have the defaults.  Factories and
balancers read it (``lb.Weighted`` reads ``weight``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Generic, TypeVar

from kitsd.core import validate
from kitsd.sd.instance import normalize_instance

__all__ = [
    "DEFAULT_INFO",
    "NO_INFO",
    "InfoFactory",
    "InstanceInfo",
    "canonical_info",
    "check_info_map",
    "copy_info",
    "factory_with_info",
]

E = TypeVar("E")

_EMPTY_META: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """Frozen metadata of one instance: ``weight`` (an int >= 0; 0 takes it out of
    weighted rotation), ``tags`` and ``meta`` (string keys and values).

    Raises ``TypeError``/:class:`~kitsd.core.errors.MisuseError` naming a bad field.
    """

    weight: int = 1
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: _EMPTY_META)

    def __post_init__(self) -> None:
        validate.integer("weight", self.weight, minimum=0)
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
        if self is other:
            return True
        if not isinstance(other, InstanceInfo):
            return NotImplemented
        # mappingproxy == mappingproxy compares the dicts underneath, in C
        return self.weight == other.weight and self.tags == other.tags and self.meta == other.meta

    def __repr__(self) -> str:
        fields = [f"weight={self.weight!r}"] if self.weight != 1 else []
        if self.tags:
            fields.append(f"tags={self.tags!r}")
        if self.meta:
            fields.append(f"meta={dict(self.meta)!r}")
        return f"InstanceInfo({', '.join(fields)})"

    @property
    def is_default(self) -> bool:
        """Whether this is the metadata of an instance nobody said anything about."""
        return self.weight == 1 and not self.tags and not self.meta


#: The metadata of an instance nobody said anything about.
DEFAULT_INFO: Final = InstanceInfo()
#: An empty instance -> info mapping.
NO_INFO: Final[Mapping[str, InstanceInfo]] = MappingProxyType({})


def canonical_info(
    info: Mapping[str, InstanceInfo], members: AbstractSet[str]
) -> Mapping[str, InstanceInfo]:
    """``info`` without default entries and entries of instances not in ``members``,
    read-only; :data:`NO_INFO` when nothing is left.  O(len(info))."""
    if not info:
        return NO_INFO
    kept = {
        instance: value for instance, value in info.items()
        if instance in members and not value.is_default
    }
    return MappingProxyType(kept) if kept else NO_INFO


def copy_info(info: Mapping[str, InstanceInfo]) -> dict[str, InstanceInfo]:
    """A mutable copy of ``info``: in C for a dict or a read-only view of one
    (``dict(proxy)`` goes key by key, 30 times slower at 10,000 entries)."""
    if isinstance(info, dict | MappingProxyType):
        return info.copy()
    return dict(info)


def check_info_map(info: object, *, name: str = "info") -> dict[str, InstanceInfo]:
    """A user's instance -> :class:`InstanceInfo` mapping, checked, keys normalised.

    Raises ``TypeError`` naming ``name`` for a non-mapping or a value that is not an
    :class:`InstanceInfo`, and :class:`~kitsd.core.errors.InvalidInstanceError` (a
    ``ValueError``) for a key that is not an instance string.
    """
    if not isinstance(info, Mapping):
        raise TypeError(f"{name} must be a mapping of instance -> sd.InstanceInfo, "
                        f"got {type(info).__name__}")
    checked: dict[str, InstanceInfo] = {}
    for instance, value in info.items():
        if not isinstance(value, InstanceInfo):
            raise TypeError(f"{name}[{instance!r}] must be an sd.InstanceInfo, "
                            f"got {type(value).__name__}")
        if not isinstance(instance, str):
            raise TypeError(f"{name} keys must be instance strings, got {type(instance).__name__}")
        checked[normalize_instance(instance)] = value
    return checked


class InfoFactory(Generic[E]):
    """An endpoint factory that also receives the instance's metadata: made by
    :func:`factory_with_info`.

    The :class:`~sd.Endpointer` calls ``build(instance, info)`` with the metadata
    the instancer published when the instance appeared.  Called as a plain factory,
    ``factory(instance)``, it builds with :data:`DEFAULT_INFO`.
    """

    __slots__ = ("build",)

    def __init__(self, build: Callable[[str, InstanceInfo], E]) -> None:
        if not callable(build):
            raise TypeError(f"factory_with_info needs a callable build(instance, info), "
                            f"got {type(build).__name__}")
        self.build = build

    def __call__(self, instance: str) -> E:
        return self.build(instance, DEFAULT_INFO)

    def __repr__(self) -> str:
        return f"factory_with_info({self.build!r})"


def factory_with_info(build: Callable[[str, InstanceInfo], E]) -> InfoFactory[E]:
    """Turn ``build(instance, info) -> endpoint`` into a factory for :class:`~sd.Endpointer`
    that receives each instance's :class:`InstanceInfo` (its weight, tags, meta).

    The endpoint is built once per instance, with the metadata published when the
    instance appeared; a later metadata-only change does not rebuild it (balancers
    read the current metadata from ``EndpointSet.info_of``).  Raises ``TypeError``
    for a ``build`` that is not callable.

    Example::

        def build(instance: str, info: sd.InstanceInfo) -> sd.Endpoint:
            scheme = "https" if "tls" in info.tags else "http"
            return make_endpoint(f"{scheme}://{instance}")

        endpointer = sd.Endpointer(instancer, sd.factory_with_info(build))
    """
    return InfoFactory(build)
