"""kitsd: client-side service discovery and load balancing, in the spirit of go-kit.

Call a service by name through one httpx transport that discovers its instances,
balances, retries, ejects failing instances and breaks circuits::

    import httpx, kitsd

    with httpx.Client(transport=kitsd.Transport("consul://127.0.0.1:8500/{service}"),
                      base_url="http://users") as client:   # the host is the service
        client.get("/profile/42")

(``kitsd.AsyncTransport`` for ``httpx.AsyncClient``; templates ``static://``,
``etcd[s]://``, ``consul[s]://``, ``dnssrv://``, ``zk://``, ``k8s://``, or an
``sd.MemoryRegistry``; ``help(kitsd.Transport)`` lists the options.)

The building blocks, one import name::

    from kitsd import sd, lb, breaker

- :mod:`kitsd.sd` — instancers, registrars, the Endpointer and the registry drivers;
- :mod:`kitsd.lb` — balancers, retry, ejection, budgets and hedging;
- :mod:`kitsd.breaker` — circuit breakers over pybreaker;
- :mod:`kitsd.serve` — register a server when it is ready, drain it before it stops;
- :mod:`kitsd.auth` — OAuth2 client credentials, JWT, Basic and mTLS for the transport;
- :mod:`kitsd.pytest_plugin` — real etcd/Consul servers and faults as pytest fixtures
  (``pip install 'kitsd[testing]'``);
- the ``kitsd`` command: ``kitsd demo`` (the whole stack, no server needed),
  ``kitsd watch URL``, ``kitsd chaos``, ``kitsd servers install NAME``.

A registry's library comes with its extra (``pip install 'kitsd[consul]'``; ``etcd``,
``dns``, ``zk``, ``k8s``, ``grpc``, ``thrift``, ``auth``, ``prometheus``, ``otel``,
``ratelimit``, ``serve``, or ``all``); using a driver without it raises an error naming
the extra.

The composition modules here (the transport, the command line, the adapters) sit above
``sd``, ``lb`` and ``breaker`` so that their import graph stays one-way; this file imports
none of them until an attribute is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitsd import auth, breaker, lb, sd, serve
    from kitsd.transport import AsyncTransport, Transport

__all__ = ["AsyncTransport", "Transport", "__version__", "auth", "breaker", "lb", "sd", "serve"]

__version__ = "0.1.0"
"""The distribution's version (the one source: ``pyproject.toml`` reads it from here)."""

_SUBPACKAGES = frozenset({"auth", "breaker", "lb", "sd", "serve"})


def __getattr__(name: str) -> Any:
    """``kitsd.Transport``, ``kitsd.sd``, ... are imported on first use (PEP 562)."""
    # Resolved on first use, so `import kitsd.pytest_plugin` (a pytest11 entry point,
    # imported by every pytest run) and `kitsd.cli` load no httpx stack they do not use,
    # and `import kitsd` alone then `kitsd.lb.RoundRobin` works.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("AsyncTransport", "Transport"):
        value = getattr(importlib.import_module("kitsd.transport"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kitsd' has no attribute {name!r}")
