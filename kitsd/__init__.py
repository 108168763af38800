"""kitsd: one-line clients over the ``sd``, ``lb`` and ``breaker`` packages, and the
``kitsd`` command line (``kitsd demo``, ``kitsd watch URL``).

- :class:`Transport` / :class:`AsyncTransport` — httpx transports whose URL host
  is a service name, discovered, balanced, retried and ejected.

This package sits above ``sd``, ``lb`` and ``breaker`` (it composes them), so that
their import graph stays one-way.
"""

from kitsd.transport import AsyncTransport, Transport

__all__ = ["AsyncTransport", "Transport"]
