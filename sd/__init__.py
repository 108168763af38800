"""kitsd service discovery: instancers, registrars and the Endpointer.

The public surface (see ``API.md``): :class:`Event`, :class:`Instancer`,
:class:`FixedInstancer`, :class:`MemoryRegistry`, :class:`Registrar`,
:class:`Endpointer`, :func:`chain`, :func:`instancer_from_url` (and
:func:`instancer_from_url_async`).  The registry
drivers live in :mod:`sd.etcd` and :mod:`sd.consul` and import their client
libraries lazily; HTTP endpoints live in :mod:`sd.http`.

Driver plumbing (:class:`sd.instancer.Broadcaster`, :class:`sd.instancer.InstancerHandle`,
:class:`sd.instancer.SharedWatches`) lives in :mod:`sd.instancer` and is not part of
this surface.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from kitsd.core.deadline import remaining
from kitsd.core.endpoint import AsyncEndpoint, Endpoint, Factory, Middleware, SyncEndpoint, is_async
from kitsd.core.errors import (
    BackendError,
    ConnectionFailure,
    InvalidInstanceError,
    KitsdError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from kitsd.core.middleware import chain
from kitsd.sd.aio import AsyncRegistrar, EventStream
from kitsd.sd.endpoint_set import EndpointSet
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Event
from kitsd.sd.instance import join_host_port, normalize_instance, split_instance
from kitsd.sd.instance_info import InstanceInfo, factory_with_info
from kitsd.sd.instancer import FixedInstancer, Instancer
from kitsd.sd.memory import MemoryRegistrar, MemoryRegistry
from kitsd.sd.registrar import Registrar
from kitsd.sd.url import instancer_from_url, instancer_from_url_async

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
    "instancer_from_url_async",
    "is_async",
    "join_host_port",
    "normalize_instance",
    "remaining",
    "split_instance",
]

if TYPE_CHECKING:  # reachable as sd.X for older code, but not part of the public surface
    from kitsd.sd import consul as consul
    from kitsd.sd import dns as dns
    from kitsd.sd import etcd as etcd
    from kitsd.sd import grpc as grpc
    from kitsd.sd import http as http
    from kitsd.sd import k8s as k8s
    from kitsd.sd import thrift as thrift
    from kitsd.sd import zk as zk
    from kitsd.sd.instancer import Broadcaster as Broadcaster
    from kitsd.sd.instancer import InstancerHandle as InstancerHandle

# Driver plumbing, not public API: drivers and tests import it from sd.instancer.  Kept
# reachable here (lazily, outside __all__) so code written against earlier versions runs.
_PLUMBING = {"Broadcaster": "kitsd.sd.instancer", "InstancerHandle": "kitsd.sd.instancer"}

# The drivers, imported on first use: ``from kitsd import sd`` then ``sd.etcd.connect()``
# works without a separate ``import kitsd.sd.etcd``, and importing kitsd.sd loads none of
# them (each imports its client library lazily in turn).
_DRIVERS = frozenset({"consul", "dns", "etcd", "grpc", "http", "k8s", "thrift", "zk"})


def __getattr__(name: str) -> Any:
    if name in _PLUMBING:
        return getattr(importlib.import_module(_PLUMBING[name]), name)
    if name in _DRIVERS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# One name configures the whole library; silent until the application adds handlers.
logging.getLogger("kitsd").addHandler(logging.NullHandler())
