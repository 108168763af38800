"""kitsd: client-side service discovery and load balancing, in the spirit of go-kit.

The one import name of the distribution::

    from kitsd import sd, lb, breaker

- :mod:`kitsd.sd` — instancers, registrars, the Endpointer and the registry drivers;
- :mod:`kitsd.lb` — balancers, retry, ejection, budgets and hedging;
- :mod:`kitsd.breaker` — circuit breakers over pybreaker;
- :class:`Transport` / :class:`AsyncTransport` — httpx transports whose URL host
  is a service name, discovered, balanced, retried and ejected;
- the ``kitsd`` command line (``kitsd demo``, ``kitsd watch URL``, ``kitsd chaos``).

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
