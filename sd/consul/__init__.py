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

from sd.consul.client import ConsulClient, InterruptibleConsul, connect
from sd.consul.instancer import AsyncConsulInstancer, ConsulInstancer
from sd.consul.registrar import ConsulRegistrar

__all__ = [
    "AsyncConsulInstancer",
    "ConsulClient",
    "ConsulInstancer",
    "ConsulRegistrar",
    "InterruptibleConsul",
    "connect",
]
