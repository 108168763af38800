"""The Kubernetes driver: a Service's instances from its EndpointSlices.

* :class:`EndpointSliceInstancer` -- the ready endpoints of a Service, from a list
  then a watch of its EndpointSlices (bookmarks, ``410 Gone`` answered by a fresh
  list and a diff, resumption with backoff), terminating endpoints drained at
  once, zone and node in :class:`sd.InstanceInfo` ``meta``.
* :class:`AsyncEndpointSliceInstancer` -- the same watch on asyncio.
* :class:`ClusterConfig` -- in-cluster (service account token, rotated) or
  kubeconfig (current or named context; tokens, token files, client
  certificates, exec plugins) configuration; :class:`StaticToken`,
  :class:`TokenFile`, :class:`ExecToken` -- where the bearer token comes from.

URL: ``k8s://[namespace/]service[:port]`` (:mod:`sd.k8s.url`), usable as a
transport template (``k8s://default/{service}:http``).

The list/watch protocol is spoken over httpx (:mod:`sd.k8s.api`), which kitsd
already depends on; the pure rules live in :mod:`sd.k8s.slices` (conditions,
merging slices) and :mod:`sd.k8s.list_watch` (resource versions, 410, errors).
Reading a kubeconfig needs PyYAML: ``pip install 'kitsd[k8s]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitsd.sd.k8s.config import ClusterConfig, ExecToken, StaticToken, TokenFile, TokenSource
    from kitsd.sd.k8s.instancer import AsyncEndpointSliceInstancer, EndpointSliceInstancer
    from kitsd.sd.k8s.watch import WatchStats

# Resolved on first use: importing kitsd.sd.k8s (and its pure modules) costs nothing.
_HOMES = {
    "AsyncEndpointSliceInstancer": "kitsd.sd.k8s.instancer",
    "ClusterConfig": "kitsd.sd.k8s.config",
    "EndpointSliceInstancer": "kitsd.sd.k8s.instancer",
    "ExecToken": "kitsd.sd.k8s.config",
    "StaticToken": "kitsd.sd.k8s.config",
    "TokenFile": "kitsd.sd.k8s.config",
    "TokenSource": "kitsd.sd.k8s.config",
    "WatchStats": "kitsd.sd.k8s.watch",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'kitsd.sd.k8s' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncEndpointSliceInstancer",
    "ClusterConfig",
    "EndpointSliceInstancer",
    "ExecToken",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "WatchStats",
]
