"""The Consul blocking-index rules, and the watch loop's decisions built on them.

Pure: no I/O, no threads, no clock.  :class:`BlockingIndex` holds the rules
(which index to ask with next, when to back off); :class:`WatchPolicy` wraps
them with backoff and answer translation into the :class:`Decision` a watch
driver carries out after each query.  Both drivers in
:mod:`sd.consul.instancer`, ``ConsulInstancer`` on a thread and
``AsyncConsulInstancer`` on asyncio, are thin loops around the same policy::

    policy = WatchPolicy(...)
    loop:
        try:    (raw_index, entries) = query(index=policy.index)
                decision = policy.answered(raw_index, entries)
        except: decision = policy.failed(kitsd error chained from the vendor error)
        publish decision.event / decision.error; log decision.log
        sleep decision.delay

Theory of operation
-------------------
A *blocking query* ``GET /v1/health/service/<name>?index=N&wait=W`` answers at
once when ``N`` is 0 (or absent); otherwise Consul holds the request until the
result's index passes ``N`` or ``W`` elapses, and every answer carries the index
it reflects in ``X-Consul-Index``.  A watcher keeps one number, the index to ask
with next, and Consul's "Blocking Queries — implementation details" lists the
edge cases it must handle (go-kit's ``sd/consul/instancer.go`` handles the same
ones).  With ``p`` the index we asked with and ``a`` the answer's index:

==========================  ==========  =======  ========  ==============================
answer                      next index  publish  back off  why
==========================  ==========  =======  ========  ==============================
``a >= p`` and ``a >= 1``   ``a``       yes      no        the normal case (``a == p``:
                                                           ``wait`` elapsed, nothing new)
``a < p`` (``p > 0``)       ``0``       no       yes       the index went backwards (a
                                                           restored snapshot, an agent
                                                           that lost its state): restart
                                                           the loop with a fresh read
``a < 1`` (``p == 0``)      ``1``       yes      yes       not a sane index (a Consul
                                                           bug): asking again with 0
                                                           would answer at once, a busy
                                                           loop; 1 is always safe
unreadable ``a``            as ``a=0``  ...      ...       a missing or non-numeric
                                                           header is no index at all
==========================  ==========  =======  ========  ==============================

The two anomalies back off (go-kit does; Consul asks clients to rate-limit), so a
server stuck answering them is not hammered; a normal answer resets the backoff.
"Publish" means the answer's entries are a usable snapshot: after the index went
backwards they are not, since the fresh read that follows is about to replace
them.

A failed query (no answer at all: the agent is down, refuses, answers 5xx) is
reported with :meth:`BlockingIndex.failed`, which resets the index to 0, so the
first query after an error is a plain read.  Here we part from go-kit, which
keeps its index: an agent that restarted without its state (a ``-dev`` agent, a
lost disk) has a *lower* index than ours, and a blocking query asking for more
than it has would be held for a whole ``wait`` before the backwards index could
show; a plain read notices at once.  The watcher also publishes the error and
backs off, so the extra read costs nothing while the agent stays down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sd.backoff import CONSUL_WATCH, Backoff
from sd.consul.health import UnreadableAnswerError, service_instances
from sd.errors import RegistryUnavailableError
from sd.event import Event

__all__ = ["BlockingIndex", "Decision", "Step", "WatchPolicy", "parse_index"]


def parse_index(raw: object) -> int | None:
    """The integer in an ``X-Consul-Index`` value (``str`` or ``int``), or ``None``.

    ``None`` for a missing, empty or non-numeric value (booleans are not
    indexes either); negative numbers parse, and the rules treat them as not
    sane.  Never raises.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(raw, str):
        text = raw.strip()
        if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
            return int(text)
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """What the watcher does after one answer.

    ``index``: ask the next query with it (0 means a plain, non-blocking read).
    ``publish``: the answer's entries are a snapshot to publish.
    ``back_off``: wait the next backoff delay before asking.
    ``reason``: why, for the log, when the answer was an anomaly (else ``None``).
    """

    index: int
    publish: bool
    back_off: bool
    reason: str | None = None


class BlockingIndex:
    """The index to ask with next, updated by :meth:`observe` (see the module docstring).

    Not thread-safe: one per watch loop.
    """

    def __init__(self) -> None:
        self._index = 0

    @property
    def index(self) -> int:
        """The index the next query asks with (0: a non-blocking read)."""
        return self._index

    def observe(self, raw_index: object) -> Step:
        """Take the ``X-Consul-Index`` of an answer; return what to do next."""
        asked = self._index
        parsed = parse_index(raw_index)
        answer = 0 if parsed is None else parsed
        shown = raw_index if parsed is None else answer
        if asked > 0 and answer < asked:
            step = Step(0, publish=False, back_off=True,
                        reason=f"index went backwards from {asked} to {shown!r}; re-reading")
        elif answer < 1:
            step = Step(1, publish=True, back_off=True,
                        reason=f"index {shown!r} is not a positive integer; waiting from 1")
        else:
            step = Step(answer, publish=True, back_off=False)
        self._index = step.index
        return step

    def failed(self) -> int:
        """A query failed without an answer: the next one is a plain read.  Returns 0."""
        self._index = 0
        return self._index


@dataclass(frozen=True, slots=True)
class Decision:
    """What a watch driver does after one query.

    ``event``: publish this snapshot (``Broadcaster.publish``), or nothing.
    ``error``: publish this error keeping the last instances
    (``Broadcaster.publish_error``), or nothing.
    ``delay``: seconds to wait before the next query (0: ask at once).
    ``log``: a warning to log, or ``None``.
    """

    event: Event | None = None
    error: BaseException | None = None
    delay: float = 0.0
    log: str | None = None


class WatchPolicy:
    """The decisions of one watch loop: blocking-index rules, backoff, translation.

    ``required_tags`` are filtered here (Consul filters the first tag; pass the
    others); ``where`` prefixes messages (``"watching service 'web' at Consul
    agent http://..."``); ``backoff`` defaults to 10 ms doubling to 60 s with
    jitter.  Not thread-safe: one per loop.
    """

    def __init__(
        self,
        *,
        required_tags: Sequence[str] = (),
        where: str = "watching a Consul service",
        backoff: Backoff | None = None,
    ) -> None:
        self._rules = BlockingIndex()
        self._required_tags = tuple(required_tags)
        self._where = where
        self._backoff = backoff if backoff is not None else Backoff(curve=CONSUL_WATCH)

    @property
    def index(self) -> int:
        """The index to ask the next query with (0: a plain read)."""
        return self._rules.index

    def answered(self, raw_index: object, entries: object) -> Decision:
        """An answer: its ``X-Consul-Index`` value and decoded JSON body."""
        try:
            instances = service_instances(
                entries, required_tags=self._required_tags, source=self._where
            )
        except UnreadableAnswerError as unreadable:
            error = RegistryUnavailableError(f"{self._where}: unreadable answer: {unreadable}")
            error.__cause__ = unreadable
            return self.failed(error)
        step = self._rules.observe(raw_index)
        event = Event(instances) if step.publish else None
        if not step.back_off:
            self._backoff.reset()
            return Decision(event=event)
        delay = self._backoff.next_delay()
        return Decision(event=event, delay=delay,
                        log=f"{self._where}: {step.reason}; next query in {delay:.2f}s")

    def failed(self, error: BaseException) -> Decision:
        """A query that got no usable answer; ``error`` is what subscribers will see."""
        self._rules.failed()
        delay = self._backoff.next_delay()
        return Decision(error=error, delay=delay, log=f"{error}; retrying in {delay:.2f}s")
