"""A consistent-hash ring with virtual nodes, free of I/O: :class:`Ring`.

Theory of operation
-------------------
Each instance is hashed to ``vnodes`` points on a 64-bit circle (BLAKE2b of
``"<instance>#<n>"``); a key goes to the owner of the first point at or after
its own hash, wrapping around.  When an instance leaves, only the keys that
landed on its points move (to the next points' owners); every other key stays
put, so the share of keys that move is the leaver's share, about ``1/N``.
More virtual nodes even out the shares (their spread shrinks as
``1/sqrt(vnodes)``) at the cost of memory and build time, so the default keeps
the ring near :data:`RING_POINTS` points: 160 per instance for small sets, down
to 16 at 10,000 instances.

A lookup is a binary search over the sorted points, O(log(N * vnodes)).
:meth:`Ring.walk` yields the distinct instances in ring order from a key's
point, which is how a retry or hedge moves to "the next instance on the ring"
and how excluded or ejected instances are skipped, deterministically.

Why a ring and not Maglev or jump hashing: jump hashing cannot drop an
arbitrary instance (only the last bucket), and Maglev's table lookup, while
O(1), moves a few extra keys on every change and has no natural "next
instance" for a retry; the ring keeps minimal disruption exact and makes the
retry walk its own order.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterator, Sequence

__all__ = ["RING_POINTS", "Ring", "key_hash"]

#: The number of ring points the default number of virtual nodes aims at.
RING_POINTS = 1600


def key_hash(key: str | bytes) -> int:
    """The 64-bit ring position of ``key`` (str keys as UTF-8)."""
    if isinstance(key, str):
        key = key.encode()
    elif not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"a consistent-hash key must be str or bytes, got {type(key).__name__}")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def default_vnodes(instances: int) -> int:
    """Virtual nodes per instance for a set of ``instances``."""
    return max(16, min(160, RING_POINTS * 10 // max(instances, 1)))


class Ring:
    """The ring of one instance set (immutable once built)."""

    __slots__ = ("_owners", "_points", "size")

    def __init__(self, instances: Sequence[str], vnodes: int | None = None) -> None:
        per = default_vnodes(len(instances)) if vnodes is None else vnodes
        pairs = sorted(
            (key_hash(f"{instance}#{n}"), index)
            for index, instance in enumerate(instances) for n in range(per)
        )
        self._points = array("Q", [point for point, _ in pairs])
        self._owners = array("I", [owner for _, owner in pairs])
        #: Instances on the ring.
        self.size = len(instances)

    def __len__(self) -> int:
        return len(self._points)

    def owner(self, position: int) -> int:
        """The index of the instance owning ring ``position`` (a :func:`key_hash`)."""
        start = bisect.bisect_left(self._points, position)
        return self._owners[start if start < len(self._owners) else 0]

    def walk(self, position: int) -> Iterator[int]:
        """Distinct instance indices in ring order from ``position``."""
        owners = self._owners
        length = len(owners)
        if not length:
            return
        start = bisect.bisect_left(self._points, position)
        seen: set[int] = set()
        for step in range(length):
            owner = owners[(start + step) % length]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.size:
                    return
