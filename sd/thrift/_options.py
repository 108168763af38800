"""What every endpoint of one factory shares: the call, the limits, and the rule
that picks a call's deadline (pure: the clock and the retry's deadline are
arguments)."""

from __future__ import annotations

from typing import Any, TypedDict

from kitsd.core import validate
from kitsd.sd.thrift._codec import Call, ProtocolName, TransportName

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "MAX_SECONDS", "Deadline", "FactoryOptions", "Options"]

#: The longest ``timeout``, ``connect_timeout`` and ``idle_timeout`` accepted: a day.
MAX_SECONDS = 86_400.0
#: 16 MB, as Apache Thrift's ``TFramedTransport`` (Go: ``DEFAULT_MAX_LENGTH``).
DEFAULT_MAX_FRAME_SIZE = 16_384_000


class FactoryOptions(TypedDict, total=False):
    """The keyword options of :func:`sd.thrift.factory` and :func:`sd.thrift.async_factory`
    (defaults: :class:`Options`)."""

    transport: TransportName
    protocol: ProtocolName
    timeout: float | None
    connect_timeout: float | None
    max_idle: int
    idle_timeout: float | None
    max_frame_size: int


class Deadline:
    """When a call must be over (``at``, on the ``time.monotonic()`` clock, or
    ``None``: no limit) and what set it, for messages (``what``)."""

    __slots__ = ("at", "what")

    def __init__(self, at: float | None, what: str) -> None:
        self.at = at
        self.what = what


_NONE = Deadline(None, "no deadline")


class Options:
    """The checked options of one factory (see :func:`sd.thrift.factory`)."""

    __slots__ = ("call", "connect_timeout", "idle_timeout", "max_idle", "timeout")

    def __init__(self, service: Any, method: object, *, transport: object = "buffered",
                 protocol: object = "binary", timeout: object = None,
                 connect_timeout: object = None, max_idle: object = 16,
                 idle_timeout: object = 60.0,
                 max_frame_size: object = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.call = Call(service, method, protocol=protocol, transport=transport,
                         max_frame_size=max_frame_size)
        # at most a day: a longer wait overflows the socket's and the event loop's timers
        self.timeout = validate.optional_seconds("timeout", timeout, maximum=MAX_SECONDS)
        self.connect_timeout = validate.optional_seconds("connect_timeout", connect_timeout,
                                                         maximum=MAX_SECONDS)
        self.idle_timeout = validate.optional_seconds("idle_timeout", idle_timeout,
                                                      maximum=MAX_SECONDS)
        self.max_idle = validate.integer("max_idle", max_idle, minimum=0)

    def deadline(self, retry_deadline: float | None, now: float) -> Deadline:
        """The call's deadline: the retry's (:func:`lb.remaining`), else ``timeout``
        from ``now``; the earlier of the two when both are set."""
        timeout = self.timeout
        if timeout is None:
            if retry_deadline is None:
                return _NONE
            return Deadline(retry_deadline, "the retry deadline")
        if retry_deadline is not None and retry_deadline <= now + timeout:
            return Deadline(retry_deadline, "the retry deadline")
        return Deadline(now + timeout, f"timeout={timeout:g}s")

    def connect_wait(self, deadline: Deadline, now: float) -> tuple[float | None, str, bool]:
        """How long connecting may take: ``(seconds or None, what bounds it, whether
        that is connect_timeout)``; seconds may be <= 0 (no time left)."""
        left = None if deadline.at is None else deadline.at - now
        connect = self.connect_timeout
        if connect is not None and (left is None or connect < left):
            return connect, f"connect_timeout={connect:g}s", True
        return left, deadline.what, False
