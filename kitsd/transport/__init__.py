"""httpx transports that resolve service names: :class:`Transport` and
:class:`AsyncTransport` (see :mod:`kitsd.transport._transport`).

Modules: ``_policy`` (the pure decisions: service names, call time, which
attempts may be sent again), ``_services`` (pure: which services are watched
and named in metrics), ``_options`` (the options, checked once), ``_discovery``
(templates to instancers, one registry client per address), ``_stack`` (one
service's stack; what the instance endpoints share), ``_core`` (what both
transports share), ``_async/transport.py`` (:class:`AsyncTransport` and its
instance endpoint, written by hand) and ``_sync/transport.py`` (:class:`Transport`,
generated from it by ``.ci/unasync.py``), ``_concurrency`` (the hand-written pairs
where threads and asyncio genuinely differ).  The HTTP attempt rules are
:mod:`sd.http._attempt`'s.
"""

from kitsd.transport._options import DEFAULT, TransportKeywords, TransportOptions
from kitsd.transport._services import TooManyServicesError
from kitsd.transport._transport import (
    DEFAULT_BALANCER,
    OUTLIER_DETECTION,
    SLOW_START,
    AsyncTransport,
    Transport,
)

__all__ = [
    "DEFAULT",
    "DEFAULT_BALANCER",
    "OUTLIER_DETECTION",
    "SLOW_START",
    "AsyncTransport",
    "TooManyServicesError",
    "Transport",
    "TransportKeywords",
    "TransportOptions",
]

for _public in (AsyncTransport, TooManyServicesError, Transport, TransportOptions):
    _public.__module__ = __name__
del _public
