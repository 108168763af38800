"""Whether the registry still shows a deregistered instance, per registry.

:func:`departure_probe` is called just before ``deregister()`` (it notes what it
needs, as the ZooKeeper node's path, while the registrar still knows it) and returns
a blocking ``probe() -> bool``: ``True`` once the registry no longer shows the
instance, as a caller would see it:

- Consul: the health answer for the service (every status, read through the
  servers) without the instance's service id;
- etcd: a read of the key finding it absent, at a revision at or after the delete's
  (a read after the delete returned is linearizable, so it is);
- ZooKeeper: the registrar's node gone;
- any other registrar (the in-process registry, your own): gone once
  ``deregister()`` returned.

A probe that raises counts as "still there" (the drive retries until ``drain=``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["departure_probe"]

logger = logging.getLogger(__name__)

Probe = Callable[[], bool]


def _consul(registrar: Any) -> Probe:
    client, service, service_id = registrar.client, registrar.service, registrar.service_id

    def probe() -> bool:
        _, entries = client.health.service(service)
        return all(entry["Service"]["ID"] != service_id for entry in entries or ())

    return probe


def _etcd(registrar: Any) -> Probe:
    client, key = registrar.client, registrar.key.encode()

    def probe() -> bool:
        page = client.read_prefix(key, limit=1, keys_only=True)
        gone = not (page.kvs and page.kvs[0].key == key)
        if gone:
            logger.debug("etcd shows %r gone at revision %d", key, page.revision)
        return gone

    return probe


def _zookeeper(registrar: Any) -> Probe:
    client, node = registrar.client, registrar.node
    if node is None:
        return lambda: True

    def probe() -> bool:
        return client.exists(node) is None

    return probe


def _loaded(module: str, name: str) -> type | None:
    """Class ``name`` of ``module`` if that module is already imported (a registrar of it
    exists only then), so no registry's client library is imported here."""
    loaded = sys.modules.get(module)
    kind = getattr(loaded, name, None)
    return kind if isinstance(kind, type) else None


def departure_probe(registrar: object) -> Probe:
    """A blocking probe: whether the registry no longer shows ``registrar``'s instance."""
    consul = _loaded("kitsd.sd.consul.registrar", "ConsulRegistrar")
    if consul is not None and isinstance(registrar, consul):
        return _consul(registrar)
    etcd = _loaded("kitsd.sd.etcd.registrar", "EtcdRegistrar")
    if etcd is not None and isinstance(registrar, etcd) \
            and hasattr(getattr(registrar, "client", None), "read_prefix"):
        return _etcd(registrar)
    zookeeper = _loaded("kitsd.sd.zk.registrar", "ZKRegistrar")
    if zookeeper is not None and isinstance(registrar, zookeeper):
        return _zookeeper(registrar)
    return lambda: True
