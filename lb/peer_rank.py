"""This client's place among its peers, from discovery: :class:`PeerRank`.

Deterministic subsetting (:class:`lb.Aperture`) needs each client's index among
all the clients of a service, kept current as clients come and go.  The clients
usually register themselves somewhere already (as instances of their own
service); :class:`PeerRank` watches that instancer and answers ``(index, count)``:
this client's position among the sorted peer instances (counted in when the
registry does not list it yet).
"""

from __future__ import annotations

import bisect
import threading

from kitsd.core.errors import shown_value
from kitsd.sd.event import Event
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instancer import Instancer

__all__ = ["PeerRank"]


class PeerRank:
    """``rank() -> (index, count)`` of ``me`` among the instances ``instancer`` lists
    (the clients of one service, ``me`` being this one's instance string); give it
    as ``lb.Aperture(size, rank=peer_rank)``.

    Subscribes at once; :meth:`close` (or the end of its ``with`` block)
    unsubscribes, and does not stop the instancer (it is yours).  While the
    registry has not answered, or lists nobody, the answer is ``(0, 1)``: this
    client alone.  Errors of the instancer keep the last list.  Thread-safe.
    ``TypeError`` / :class:`sd.InvalidInstanceError` for a bad ``me``.
    """

    def __init__(self, instancer: Instancer, me: str) -> None:
        if not callable(getattr(instancer, "subscribe", None)):
            raise TypeError(f"instancer must be an sd.Instancer, got {shown_value(instancer)}")
        if not isinstance(me, str):
            raise TypeError(f"me must be this client's instance string, got {shown_value(me)}")
        self.me = normalize_instance(me)
        self._instancer = instancer
        self._lock = threading.Lock()
        self._peers: tuple[str, ...] = ()
        self._closed = False
        instancer.subscribe(self._update)

    def _update(self, event: Event) -> None:
        if event.error is not None:
            return  # keep the last list
        with self._lock:
            self._peers = tuple(sorted(event.instances))

    def __call__(self) -> tuple[int, int]:
        with self._lock:
            peers = self._peers
        if not peers:
            return 0, 1
        position = bisect.bisect_left(peers, self.me)
        listed = position < len(peers) and peers[position] == self.me
        return position, len(peers) if listed else len(peers) + 1

    def close(self) -> None:
        """Stop watching (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._instancer.unsubscribe(self._update)

    def __enter__(self) -> PeerRank:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        index, count = self()
        return f"PeerRank({self.me!r}: {index} of {count})"
