"""kitsd service discovery: instancers, registrars and the Endpointer.

The public surface (see ``API.md``): :class:`Event`, :class:`Instancer`,
:class:`FixedInstancer`, :class:`MemoryRegistry`, :class:`Registrar`,
:class:`Endpointer`, :func:`chain`, :func:`instancer_from_url`.  The registry
drivers live in :mod:`sd.etcd` and :mod:`sd.consul` and import their client
libraries lazily; HTTP endpoints live in :mod:`sd.http`.

Driver plumbing (:class:`sd.instancer.Broadcaster`, :class:`sd.instancer.InstancerHandle`,
:class:`sd.instancer.SharedWatches`) lives in :mod:`sd.instancer` and is not part of
this surface.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from sd.aio import AsyncRegistrar, EventStream
from sd.deadline import remaining
from sd.endpoint import AsyncEndpoint, Endpoint, Factory, Middleware, SyncEndpoint, is_async
from sd.endpoint_set import EndpointSet
from sd.endpointer import Endpointer
from sd.errors import (
    BackendError,
    ConnectionFailure,
    InvalidInstanceError,
    KitsdError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from sd.event import Event
from sd.instance import join_host_port, normalize_instance, split_instance
from sd.instance_info import InstanceInfo, factory_with_info
from sd.instancer import FixedInstancer, Instancer
from sd.memory import MemoryRegistrar, MemoryRegistry
from sd.middleware import chain
from sd.registrar import Registrar
from sd.url import instancer_from_url

__all__ = [
    "AsyncEndpoint",
    "AsyncRegistrar",
    "BackendError",
    "ConnectionFailure",
    "Endpoint",
    "EndpointSet",
    "Endpointer",
    "Event",
    "EventStream",
    "Factory",
    "FixedInstancer",
    "InstanceInfo",
    "Instancer",
    "InvalidInstanceError",
    "KitsdError",
    "MemoryRegistrar",
    "MemoryRegistry",
    "Middleware",
    "MisuseError",
    "PermissionDeniedError",
    "Registrar",
    "RegistryUnavailableError",
    "SyncEndpoint",
    "chain",
    "factory_with_info",
    "instancer_from_url",
    "is_async",
    "join_host_port",
    "normalize_instance",
    "remaining",
    "split_instance",
]

if TYPE_CHECKING:  # reachable as sd.X for older code, but not part of the public surface
    from sd.instancer import Broadcaster as Broadcaster
    from sd.instancer import InstancerHandle as InstancerHandle

# Driver plumbing, not public API: drivers and tests import it from sd.instancer.  Kept
# reachable here (lazily, outside __all__) so code written against earlier versions runs.
_PLUMBING = {"Broadcaster": "sd.instancer", "InstancerHandle": "sd.instancer"}


def __getattr__(name: str) -> Any:
    if name in _PLUMBING:
        return getattr(importlib.import_module(_PLUMBING[name]), name)
    raise AttributeError(f"module 'sd' has no attribute {name!r}")


# One name configures the whole library; silent until the application adds handlers.
logging.getLogger("kitsd").addHandler(logging.NullHandler())
