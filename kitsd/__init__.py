"""kitsd: one-line clients over the ``sd``, ``lb`` and ``breaker`` packages, and the
``kitsd`` command line (``kitsd demo``, ``kitsd watch URL``).

- :class:`Transport` / :class:`AsyncTransport` — httpx transports whose URL host
  is a service name, discovered, balanced, retried and ejected.

This package sits above ``sd``, ``lb`` and ``breaker`` (it composes them), so that
their import graph stays one-way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitsd.transport import AsyncTransport, Transport

__all__ = ["AsyncTransport", "Transport"]


def __getattr__(name: str) -> Any:
    # Resolved on first use, so `import kitsd.pytest_plugin` (a pytest11 entry point,
    # imported by every pytest run) and `kitsd.cli` load no httpx stack they do not use.
    if name in __all__:
        value = getattr(importlib.import_module("kitsd.transport"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kitsd' has no attribute {name!r}")
