"""kitsd service discovery: instancers, registrars and the Endpointer.

The public surface (see ``API.md``): :class:`Event`, :class:`Instancer`,
:class:`FixedInstancer`, :class:`MemoryRegistry`, :class:`Registrar`,
:class:`Endpointer`, :func:`chain`, :func:`instancer_from_url`.  The registry
drivers live in :mod:`sd.etcd` and :mod:`sd.consul` and import their client
libraries lazily; HTTP endpoints live in :mod:`sd.http`.
"""

import logging

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
from sd.instancer import Broadcaster, FixedInstancer, Instancer, InstancerHandle
from sd.memory import MemoryRegistrar, MemoryRegistry
from sd.middleware import chain
from sd.registrar import Registrar
from sd.url import instancer_from_url

__all__ = [
    "AsyncEndpoint",
    "AsyncRegistrar",
    "BackendError",
    "Broadcaster",
    "ConnectionFailure",
    "Endpoint",
    "EndpointSet",
    "Endpointer",
    "Event",
    "EventStream",
    "Factory",
    "FixedInstancer",
    "Instancer",
    "InstancerHandle",
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
    "instancer_from_url",
    "is_async",
    "join_host_port",
    "normalize_instance",
    "remaining",
    "split_instance",
]

# One name configures the whole library; silent until the application adds handlers.
logging.getLogger("kitsd").addHandler(logging.NullHandler())
