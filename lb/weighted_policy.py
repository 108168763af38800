"""Smooth weighted round-robin schedules, free of I/O: :func:`smooth_schedule`.

Theory of operation
-------------------
nginx's smooth weighted round robin gives, for weights ``{a: 5, b: 1, c: 1}``,
``a a b a c a a`` rather than ``a a a a a b c``: at every step it picks the
instance furthest behind its share (``current += weight`` for all, pick the
largest ``current``, subtract the total from it).  Over a cycle of
``W = sum(weights)`` picks each instance gets exactly its weight, and at every
prefix each is within about one pick of its share: no bursts.

Done live, that is O(N) per pick.  Instead a balancer builds the whole cycle once
per endpoint set and then picks are ``schedule[next % len]``, O(1):

* the weights are divided by their greatest common divisor (``{2, 2}`` is a
  cycle of 2, not 4);
* if the cycle would exceed :data:`MAX_CYCLE` picks, the weights are scaled
  down to fit (rounded, never below 1), which moves each share by at most
  ``0.5 / weight`` of itself — under 1 % for the weights that need scaling;
* small sets (``N * W <= NGINX_LIMIT``) run nginx's algorithm itself; larger
  ones an earliest-deadline-first schedule over a heap (the ``k``-th pick of an
  instance of weight ``w`` is due at ``(k - 1/2) / w``), O(W log N), with the
  same property: at every prefix of length ``t`` each instance has had
  ``t * w / W`` picks, give or take one.

Weight 0 instances are left out of the cycle.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Sequence

__all__ = ["MAX_CYCLE", "NGINX_LIMIT", "smooth_schedule"]

#: The longest cycle built (4 bytes per pick).
MAX_CYCLE = 1 << 20
#: Above this ``N * W`` the O(W log N) schedule replaces nginx's O(W * N) loop.
NGINX_LIMIT = 1 << 18


def _reduced(weights: Sequence[int]) -> list[int]:
    divisor = 0
    for weight in weights:
        divisor = math.gcd(divisor, weight)
    if divisor == 0:
        return [0] * len(weights)
    reduced = [weight // divisor for weight in weights]
    total = sum(reduced)
    if total > MAX_CYCLE:
        scale = MAX_CYCLE / total
        reduced = [max(1, round(weight * scale)) if weight else 0 for weight in reduced]
    return reduced


def _nginx(weights: list[int], total: int) -> array[int]:
    current = [0] * len(weights)
    schedule = array("I")
    live = [index for index, weight in enumerate(weights) if weight]
    for _ in range(total):
        best = -1
        for index in live:
            current[index] += weights[index]
            if best < 0 or current[index] > current[best]:
                best = index
        current[best] -= total
        schedule.append(best)
    return schedule


def _earliest_deadline(weights: list[int], total: int) -> array[int]:
    heap = [(0.5 / weight, index) for index, weight in enumerate(weights) if weight]
    heapq.heapify(heap)
    schedule = array("I", bytes(4 * total))
    for position in range(total):
        due, index = heap[0]
        schedule[position] = index
        heapq.heapreplace(heap, (due + 1.0 / weights[index], index))
    return schedule


def smooth_schedule(weights: Sequence[int]) -> array[int]:
    """One cycle of smooth weighted round robin over ``weights`` (ints >= 0): indices
    into ``weights``; empty when every weight is 0."""
    reduced = _reduced(weights)
    total = sum(reduced)
    if not total:
        return array("I")
    if len(reduced) * total <= NGINX_LIMIT:
        return _nginx(reduced, total)
    return _earliest_deadline(reduced, total)
