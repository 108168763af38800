"""What :class:`lb.LeastLoaded` and :class:`lb.PeakEWMA` wrap a picked endpoint in, to
learn from each call: the bases (:class:`Counted`, :class:`Timed`).  The calls are
``lb/_async/measured.py`` (written by hand) and its generated sync twin
``lb/_sync/measured.py`` (``.ci/unasync.py``); each balancer hands out the kind
that matches the endpoint.
"""

from __future__ import annotations

from typing import Any, Protocol

from kitsd.core.endpoint import Endpoint

__all__ = ["Counted", "InFlight", "Timed", "Timing"]


class InFlight(Protocol):
    """The requests in flight per instance a :class:`Counted` books into."""

    def enter(self, instance: str) -> None: ...

    def leave(self, instance: str) -> None: ...


class Counted:
    """An endpoint whose calls are counted while in flight (:class:`lb.LeastLoaded`)."""

    __slots__ = ("__wrapped__", "_counts", "_instance")

    def __init__(self, endpoint: Endpoint, instance: str, counts: InFlight) -> None:
        self.__wrapped__ = endpoint
        self._instance = instance
        self._counts = counts

    def __repr__(self) -> str:
        return f"<counted {self._instance}: {self.__wrapped__!r}>"

    def __call__(self, request: Any) -> Any:
        raise NotImplementedError


class Timing(Protocol):
    """The balancer a :class:`Timed` reports to (:class:`lb.PeakEWMA`)."""

    def _started(self, timed: Timed) -> float: ...

    def _finished(self, timed: Timed, start: float, failed: bool | None) -> None: ...


class Timed:
    """An endpoint whose calls are timed (:class:`lb.PeakEWMA`): ``failed`` is ``False``
    for an answer, ``True`` for an error, ``None`` for a call interrupted before it
    answered (cancelled: its time is a lower bound)."""

    __slots__ = ("__wrapped__", "_balancer", "_index", "_instance", "_set")

    def __init__(self, endpoint: Endpoint, instance: str, index: int, picked_from: object,
                 balancer: Timing) -> None:
        self.__wrapped__ = endpoint
        self._instance = instance
        self._index = index  # in `picked_from`, the instances the table was indexed by
        self._set = picked_from
        self._balancer = balancer

    def __repr__(self) -> str:
        return f"<timed {self._instance}: {self.__wrapped__!r}>"

    def __call__(self, request: Any) -> Any:
        raise NotImplementedError
