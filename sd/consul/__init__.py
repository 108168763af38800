"""The Consul driver (needs ``kitsd[consul]``: py-consul).

* :class:`ConsulInstancer` — the live instances of a service, from blocking
  queries on ``/v1/health/service`` (go-kit's ``consul.Instancer``, plus a
  prompt ``stop()`` and errors mapped into :mod:`kitsd.core.errors`).
* :class:`AsyncConsulInstancer` — the same watch on asyncio.
* :class:`ConsulRegistrar` — registers one instance with the local agent and
  keeps a TTL check passing (go-kit's registrar has no health check).
* :func:`connect` — a py-consul client over httpx for an agent address
  (:class:`HttpxConsul`; :class:`AsyncHttpxConsul` is its asyncio twin, both
  built from :class:`AgentSettings`); :class:`ConsulClient` — the narrow
  protocol the driver needs.

Every request goes through py-consul (request building, status checks) over
httpx (:mod:`sd.consul.transport`); both instancers run one watch coroutine
(:mod:`sd.consul.watch`).  The pure rules live in :mod:`sd.consul.index`
(blocking index, ACL default deny) and :mod:`sd.consul.health` (answer to
instances).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitsd.sd.consul.client import ConsulClient, connect
    from kitsd.sd.consul.instancer import AsyncConsulInstancer, ConsulInstancer
    from kitsd.sd.consul.registrar import ConsulRegistrar
    from kitsd.sd.consul.transport import AgentSettings, AsyncHttpxConsul, HttpxConsul

# Resolved on first use, so `import sd.consul` (and its pure modules) works without
# py-consul, and a missing client library is reported with the extra to install.
_HOMES = {
    "AgentSettings": "kitsd.sd.consul.transport",
    "AsyncHttpxConsul": "kitsd.sd.consul.transport",
    "ConsulClient": "kitsd.sd.consul.client",
    "HttpxConsul": "kitsd.sd.consul.transport",
    "connect": "kitsd.sd.consul.client",
    "AsyncConsulInstancer": "kitsd.sd.consul.instancer",
    "ConsulInstancer": "kitsd.sd.consul.instancer",
    "ConsulRegistrar": "kitsd.sd.consul.registrar",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'kitsd.sd.consul' has no attribute {name!r}")
    try:
        module = importlib.import_module(home)
    except ImportError as error:
        raise ImportError(
            f"sd.consul.{name} needs py-consul: pip install 'kitsd[consul]' ({error})"
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value

__all__ = [
    "AgentSettings",
    "AsyncConsulInstancer",
    "AsyncHttpxConsul",
    "ConsulClient",
    "ConsulInstancer",
    "ConsulRegistrar",
    "HttpxConsul",
    "connect",
]
