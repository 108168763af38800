"""Reading a whole etcd prefix in pages, all at one revision, past keys too large to receive.

Pure: no I/O.  The instancer's watch thread asks :class:`PagedRead` what to
request next, makes the request, and hands back the answer or the fact that it
was too large.

Theory of operation
-------------------
One range read of a big prefix can be larger than the client accepts (grpcio's
default limit is 4 MiB; five 1 MiB values are enough): etcd then answers
``RESOURCE_EXHAUSTED`` however often it is asked.  So the prefix is read in
pages, as etcd's own clients paginate::

    page 1:  [prefix, prefix_end)            limit L            -> revision R
    page n:  (last key of page n-1, prefix_end)  limit L  at revision R

Every page after the first is read *at the first page's revision* ``R``, so
the pages together are one consistent snapshot, and the watch resumes from
``R + 1``.  (If ``R`` is compacted meanwhile, the read fails with a compaction
error and starts over.)

When a page is too large, ``L`` is halved and the same page asked again; a
page that fits lets ``L`` grow back (doubling, up to the configured size).
When a single key is too large (``L == 1``), its name is read without its value
(``keys_only``), the key is recorded in :attr:`PagedRead.skipped` and the read
goes on after it: one bad entry never hides the good ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kitsd.core import validate
from kitsd.sd.etcd.revision import KeyValue

__all__ = ["DEFAULT_PAGE_SIZE", "PageRequest", "PagedRead", "prefix_end"]

#: Keys per page when nothing is too large (etcd's own clients use 1,000-10,000).
DEFAULT_PAGE_SIZE: Final = 5_000


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key starting with ``prefix``.

    The prefix with its last byte below 0xff incremented and the rest dropped;
    ``b"\\0"`` (every key) when the prefix is empty or all 0xff.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What to read next: keys under the prefix strictly after ``after``."""

    after: bytes | None
    revision: int  # 0: now (first page); else the first page's revision
    limit: int
    keys_only: bool = False


class PagedRead:
    """The bookkeeping of one paged read of a prefix.

    Loop: ``while (request := read.next_request()) is not None``, make the
    request, then :meth:`page` with the answer or :meth:`too_large` when the
    client refused it as too large.  Then :attr:`kvs`, :attr:`revision` and
    :attr:`skipped` are the result.  Not thread-safe.
    """

    def __init__(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        validate.integer("page_size", page_size, minimum=1)
        self._page_size = page_size
        self._limit = page_size
        self._after: bytes | None = None
        self._revision = 0
        self._keys_only = False
        self._done = False
        self._kvs: list[KeyValue] = []
        self._skipped: list[bytes] = []
        self._requests = 0

    @property
    def kvs(self) -> list[KeyValue]:
        """The keys read so far, in key order."""
        return self._kvs

    @property
    def revision(self) -> int:
        """The revision every page was read at (0 before the first page)."""
        return self._revision

    @property
    def skipped(self) -> list[bytes]:
        """Keys left out because even alone they were too large to receive."""
        return self._skipped

    @property
    def requests(self) -> int:
        """How many requests the read asked for (for tests and logs)."""
        return self._requests

    @property
    def done(self) -> bool:
        """Whether the whole prefix has been read."""
        return self._done

    def next_request(self) -> PageRequest | None:
        """The next page to ask for, or ``None`` when the read is complete."""
        if self._done:
            return None
        self._requests += 1
        if self._keys_only:
            return PageRequest(self._after, self._revision, 1, keys_only=True)
        return PageRequest(self._after, self._revision, self._limit)

    def page(self, kvs: tuple[KeyValue, ...] | list[KeyValue], revision: int, more: bool) -> None:
        """Apply the answer to the last request (``revision`` is the answer's header)."""
        if self._revision == 0:
            self._revision = revision
        if self._keys_only:
            self._keys_only = False
            if not kvs:  # the oversized key is gone meanwhile... not at our revision, but:
                self._done = True
                return
            self._skipped.append(kvs[0].key)
            self._after = kvs[0].key
            self._done = not more
            return
        self._kvs.extend(kvs)
        if kvs:
            self._after = kvs[-1].key
        self._done = not more or not kvs
        self._limit = min(self._page_size, self._limit * 2)

    def too_large(self) -> None:
        """The last request's answer was larger than the client accepts.

        Raises ``RuntimeError`` if even a keys-only read of one key was too large
        (a key name cannot be that long in etcd).
        """
        if self._keys_only:
            raise RuntimeError("a single key name is larger than the client accepts")
        if self._limit > 1:
            self._limit = max(1, self._limit // 2)
        else:
            self._keys_only = True
