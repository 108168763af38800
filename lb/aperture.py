"""Deterministic subsetting, free of I/O: the :class:`Aperture` settings and :func:`subset`
(Twitter Finagle's deterministic aperture).

Theory of operation
-------------------
With many clients and many instances, every client talking to every instance
costs ``clients x instances`` connections (each with its memory, keep-alives,
TLS handshakes and health checks).  Subsetting gives each client a few
instances — chosen so that every instance gets the same number of clients, the
same load, and as little as possible moves when a client or an instance comes
or goes.  A random subset per client does not: with 30 clients each taking 10 of
100 instances at random, some instance typically has 7 clients and another 0.

Finagle's *deterministic aperture* places both sides on a ring of
circumference 1::

    instances:  instance j covers [j / N, (j + 1) / N)        (sorted, N of them)
    clients:    client i covers   [i / C, i / C + width)      (C of them)
    width     = size / N rounded to the nearest multiple of 1 / C (>= 1 / C), at most 1

A client talks to every instance its range overlaps, and sends each a share of
its calls in proportion to the overlap (a client's range starting mid-instance
gives that instance a partial weight).  Because the client ranges are evenly
spaced and span a whole number of client slices, every point of the ring is
covered by exactly ``C * width`` client ranges, so every instance receives the
same load (exactly, with weighted picks) and the number of clients per instance
is ``C * (width + 1/N)`` rounded up or down: with 30 clients, 100 instances and
an aperture of 10, 3 or 4 clients each (max/min 1.33).

Churn moves little.  An instance joining or leaving shifts the ring positions
of the others by at most one position's worth, so a client's range keeps most
of its instances; a client joining moves every client's offset by at most
``1 / C``, a fraction ``1 / (C * width)`` of its range.  (Random or hashed
placements move less on churn but are uneven; Google's subsetting is even only
in whole rounds of clients.  The deterministic aperture is even for any C.)

A client's coordinate (its index among ``clients``) comes from the settings or
from a callable — :class:`lb.PeerRank` derives it from an instancer of the
clients themselves, so it follows them as they come and go.

Nothing here does I/O: :func:`subset` is arithmetic on counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kitsd.core import validate
from kitsd.core.errors import MisuseError, WrongTypeError, shown_value

__all__ = ["Aperture", "Coordinates", "aperture_width", "subset"]

#: ``rank() -> (index, count)``: this client's position among its peers, now.
Coordinates = Callable[[], tuple[int, int]]

_EPSILON = 1e-9  # overlaps thinner than this are rounding, not coverage


@dataclass(frozen=True, slots=True)
class Aperture:
    """Talk to a deterministic subset of about ``size`` instances (Finagle's
    deterministic aperture; see the module docstring).

    * ``size`` (an int >= 1, default 10): about how many instances each client
      talks to — rounded to a whole number of client slices (``instances /
      clients`` each), so that the load is exactly even, plus partial instances
      at the range's ends; every instance when there are no more than that.
    * ``client`` and ``clients``: this client's index in ``[0, clients)`` — or
    * ``rank``: a callable ``() -> (index, count)`` read whenever the instance set
      changes (:class:`lb.PeerRank` keeps one from an instancer of the clients).

    Give it to a balancer (``subset=``); each balancer keeps its own view.
    Frozen, shareable, thread-safe (``rank`` must be too).  Raises
    :class:`~kitsd.core.errors.WrongTypeError` / :class:`~kitsd.core.errors.MisuseError`
    naming a bad setting.
    """

    size: int = 10
    client: int | None = None
    clients: int | None = None
    rank: Coordinates | None = None

    def __post_init__(self) -> None:
        validate.integer("size", self.size, minimum=1)
        if self.rank is not None:
            if not callable(self.rank):
                raise WrongTypeError(f"rank must be callable() -> (index, count), "
                                     f"not {shown_value(self.rank)}")
            if self.client is not None or self.clients is not None:
                raise MisuseError("give either client= and clients=, or rank=, not both")
            return
        if self.client is None or self.clients is None:
            raise MisuseError("an Aperture needs this client's position: client= and "
                              "clients=, or rank=")
        clients = validate.integer("clients", self.clients, minimum=1)
        validate.integer("client", self.client, minimum=0, maximum=clients - 1)

    def coordinates(self) -> tuple[int, int]:
        """``(index, count)``: this client's position now.  ``ValueError`` if ``rank``
        answers something unusable."""
        if self.rank is None:
            return self.client, self.clients  # type: ignore[return-value]  # both set
        answer = self.rank()
        if (not isinstance(answer, tuple) or len(answer) != 2
                or not all(isinstance(part, int) and not isinstance(part, bool)
                           for part in answer)
                or not 0 <= answer[0] < answer[1]):
            raise MisuseError(f"rank() must return (index, count) with 0 <= index < count, "
                              f"not {shown_value(answer)}")
        return answer


def aperture_width(count: int, servers: int, size: int) -> float:
    """The ring width of every client's range: ``size / servers`` rounded to the nearest
    whole number of client slices (``1 / count``; at least one), so that every point
    of the ring is covered by exactly ``count * width`` ranges and every instance
    gets the same load; at most 1."""
    slices = math.floor(size / servers * count + 0.5 + _EPSILON)
    return min(1.0, max(1, slices) / count)


def subset(index: int, count: int, servers: int, size: int) -> tuple[tuple[int, float], ...]:
    """The instances (indices into the sorted set of ``servers``) that client ``index``
    of ``count`` talks to with an aperture of ``size``, each with its weight in
    ``(0, 1]`` (the part of the instance its range covers), in ring order from the
    range's start.  Every instance, weight 1, when ``size >= servers``."""
    if servers <= 0:
        return ()
    if size >= servers:
        return tuple((server, 1.0) for server in range(servers))
    width = aperture_width(count, servers, size)
    if width >= 1.0:
        return tuple((server, 1.0) for server in range(servers))
    start = index / count
    # In units of instances: the range [begin, begin + span) on a ring of `servers`.
    begin = start * servers
    span = width * servers
    chosen: list[tuple[int, float]] = []
    first = math.floor(begin + _EPSILON)
    position = float(first)
    end = begin + span
    while position < end - _EPSILON:
        low = max(position, begin)
        high = min(position + 1.0, end)
        overlap = high - low
        if overlap > _EPSILON:
            chosen.append((int(position) % servers, min(1.0, overlap)))
        position += 1.0
    return tuple(chosen)
