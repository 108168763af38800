"""``kitsd.Transport`` and ``kitsd.AsyncTransport``: httpx transports whose URL host
is a service name.  :class:`AsyncTransport` is written once
(``_async/transport.py``), :class:`Transport` generated from it
(``_sync/transport.py``); both stand on :class:`kitsd.transport._core._Core`."""

from __future__ import annotations

from kitsd.transport._async.transport import AsyncTransport
from kitsd.transport._core import DEFAULT_BALANCER, OUTLIER_DETECTION, SLOW_START
from kitsd.transport._sync.transport import Transport

__all__ = ["DEFAULT_BALANCER", "OUTLIER_DETECTION", "SLOW_START", "AsyncTransport", "Transport"]
