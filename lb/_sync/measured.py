# Generated from lb/_async/measured.py by .ci/unasync.py: do not edit.
# Edit the source and run `python .ci/unasync.py`; `python .ci/unasync.py --check`
# fails on a hand edit.
"""The asyncio measuring endpoints of :class:`lb.LeastLoaded` and :class:`lb.PeakEWMA`
(their sync twins, ``lb/_sync/measured.py``, are generated from this file by
``.ci/unasync.py``); the bases are in :mod:`lb._measured`."""

from __future__ import annotations

from typing import Any

from kitsd.lb._measured import Counted, Timed

__all__ = ["SyncCounted", "SyncTimed"]


class SyncCounted(Counted):
    """Counts the call as in flight until it ends."""

    __slots__ = ()

    def __call__(self, request: Any) -> Any:
        self._counts.enter(self._instance)
        try:
            return self.__wrapped__(request)
        finally:
            self._counts.leave(self._instance)


class SyncTimed(Timed):
    """Times the call and books it: an answer, a failure, or interrupted."""

    __slots__ = ()

    def __call__(self, request: Any) -> Any:
        start = self._balancer._started(self)
        failed: bool | None = None  # None: interrupted before it answered
        try:
            response = self.__wrapped__(request)
        except Exception:
            failed = True
            raise
        else:
            failed = False
        finally:
            self._balancer._finished(self, start, failed)
        return response
