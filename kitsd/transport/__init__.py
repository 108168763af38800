"""httpx transports that resolve service names: :class:`Transport` and
:class:`AsyncTransport` (see :mod:`kitsd.transport._transport`).

Modules: ``_policy`` (the pure decisions: service names, timeouts, outcome
classification, ``Retry-After``), ``_stack`` (one service's stack and the
per-instance endpoints), ``_transport`` (the two transports).
"""

from kitsd.transport._transport import DEFAULT_BALANCER, AsyncTransport, Transport

__all__ = ["DEFAULT_BALANCER", "AsyncTransport", "Transport"]

for _public in (AsyncTransport, Transport):
    _public.__module__ = __name__
del _public
