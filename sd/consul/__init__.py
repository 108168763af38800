"""The Consul driver (needs ``kitsd[consul]``: py-consul).

* :class:`ConsulInstancer` — the live instances of a service, from blocking
  queries on ``/v1/health/service`` (go-kit's ``consul.Instancer``, plus a
  prompt ``stop()`` and errors mapped into :mod:`sd.errors`).
* :class:`AsyncConsulInstancer` — the same on asyncio, over httpx (py-consul's
  async client would need aiohttp).
* :class:`ConsulRegistrar` — registers one instance with the local agent and
  keeps a TTL check passing (go-kit's registrar has no health check).
* :func:`connect` — a py-consul client for an agent address whose requests can
  be interrupted; :class:`ConsulClient` — the narrow protocol the driver needs.

The pure rules live in :mod:`sd.consul.index` (blocking index) and
:mod:`sd.consul.health` (answer to instances).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sd.consul.client import ConsulClient, InterruptibleConsul, connect
    from sd.consul.instancer import AsyncConsulInstancer, ConsulInstancer
    from sd.consul.registrar import ConsulRegistrar

# Resolved on first use, so `import sd.consul` (and its pure modules) works without
# py-consul, and a missing client library is reported with the extra to install.
_HOMES = {
    "ConsulClient": "sd.consul.client",
    "InterruptibleConsul": "sd.consul.client",
    "connect": "sd.consul.client",
    "AsyncConsulInstancer": "sd.consul.instancer",
    "ConsulInstancer": "sd.consul.instancer",
    "ConsulRegistrar": "sd.consul.registrar",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sd.consul' has no attribute {name!r}")
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
    "AsyncConsulInstancer",
    "ConsulClient",
    "ConsulInstancer",
    "ConsulRegistrar",
    "InterruptibleConsul",
    "connect",
]
