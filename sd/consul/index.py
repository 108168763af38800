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

An answer whose index equals the one we asked with *and* the one the last
answer carried is the same snapshot again (the ``wait`` elapsed with nothing
new): :class:`Step` says ``unchanged`` and the policy skips translating it.
:attr:`BlockingIndex.unchanged_at` names that index before the query is
sent, so the HTTP layer may skip even decoding such an answer (10 MB of JSON
at 10,000 instances) and hand over :data:`UNREAD` instead of the entries.

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

Recovery
--------
How soon the next query goes out after a failure depends on whether the
request reached the agent (:meth:`WatchPolicy.failed`'s ``reached``), the way
the etcd watch's backoff ends as soon as its gRPC channel connects again:

===========================================  ===========================  ===============
failure                                      next query (a plain read)    reaching the
                                                                          agent
===========================================  ===========================  ===============
nothing reached the agent (connection        in 0.1-0.2 s, again and      none
refused or unreachable, connect timeout):    again (:data:`sd.backoff.
it is down or restarting                     CONSUL_PROBE`)
the agent answered an error right after      in 0.1-0.2 s, for at most    at most
refusing connections: it is starting up      :data:`RECOVERY_PROBES`      RECOVERY_PROBES
(a server elects itself ~1 s after it        queries (~2 s)               per restart
listens, answering "No cluster leader")
any other error the agent answered (5xx,     10 ms doubling to 2 s        at most 1/s once
a broken or unreadable answer, a timeout     (:data:`sd.backoff.          the backoff has
after connecting): it is up but failing      CONSUL_WATCH`)               grown
===========================================  ===========================  ===============

A refused connection costs the agent nothing (its kernel turns it away), so
the watch tries to connect every 0.1-0.2 s while the agent is down and reads
as soon as it listens again: a ``-dev`` agent restarted without its state is
ready as soon as it listens, and the watch is back within ~0.15 s.  A server
restarted with its data listens ~1 s before it has elected itself; the watch
keeps asking every 0.1-0.2 s through that start-up (a bounded burst, not a
rate) and is back within ~0.15 s of the election.  While it elects itself a
server *holds* reads (Consul's RPC hold, up to 7 s, retried inside at random
intervals of up to ~0.4 s), so during start-up the watch also gives a read up
after :data:`RECOVERY_READ_TIMEOUT` and asks again (:attr:`WatchPolicy.read_timeout`):
the first read after the election is answered at once.  An agent that keeps
failing is asked at most once a second.  A good answer resets every schedule.

ACL default deny
----------------
With ACLs on and ``default_policy = "deny"``, a request without a token, or
with one lacking ``service:read`` (and ``node:read``) on the service, is not
refused: Consul answers ``200 []`` with ``X-Consul-Default-Acl-Policy:
deny``, exactly what a service without instances gets (Consul 1.22 sends no
"results filtered" header here; checked against a real agent).  Publishing
that as an empty set would hide the refusal, so :class:`WatchPolicy` decides:

==========================================  =====================================
answer                                      decision
==========================================  =====================================
empty list, deny, no non-empty answer yet   error event: :class:`PermissionDeniedError`
                                            (instances kept); a warning, logged once
empty list, deny, after a non-empty answer  the empty set (the token could read the
                                            service before: it scaled to zero)
anything else                               as usual
==========================================  =====================================

The index still advances (no backoff): when instances appear, or a token with
read access is used, the next answer clears the error at once.  The message
says whether a token was sent, and that the service may simply have no
instances yet: one answer cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.backoff import CONSUL_PROBE, CONSUL_WATCH, Backoff
from kitsd.sd.consul.health import InfoMemo, Memo, UnreadableAnswerError, service_instances
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InstanceInfo

__all__ = ["RECOVERY_PROBES", "RECOVERY_READ_TIMEOUT", "UNREAD", "BlockingIndex", "Decision",
           "Step", "WatchPolicy", "parse_index"]

RECOVERY_PROBES = 15
"""Queries made on the probe schedule (every 0.1-0.2 s) while an agent that was
refusing connections answers errors: its start-up (see "Recovery" above)."""

RECOVERY_READ_TIMEOUT = 0.25
"""Seconds a read may be held during an agent's start-up before it is asked again."""


class _Unread:
    """The type of :data:`UNREAD`."""

    def __repr__(self) -> str:
        return "UNREAD"


UNREAD = _Unread()
"""Stands for a body left undecoded because its index said it was unchanged
(see :attr:`BlockingIndex.unchanged_at`)."""


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
    ``unchanged``: the answer repeats the last one's index (nothing new).
    """

    index: int
    publish: bool
    back_off: bool
    reason: str | None = None
    unchanged: bool = False


class BlockingIndex:
    """The index to ask with next, updated by :meth:`observe` (see the module docstring).

    Not thread-safe: one per watch loop.
    """

    def __init__(self) -> None:
        self._index = 0
        self._seen: int | None = None  # the index the last usable answer carried

    @property
    def index(self) -> int:
        """The index the next query asks with (0: a non-blocking read)."""
        return self._index

    @property
    def unchanged_at(self) -> int | None:
        """The answer index at which the next answer repeats the last one (its body
        need not be read), or ``None``."""
        return self._index if self._index > 0 and self._index == self._seen else None

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
            step = Step(answer, publish=True, back_off=False,
                        unchanged=answer == asked == self._seen)
        self._index = step.index
        self._seen = parsed if step.publish else None
        return step

    def failed(self) -> int:
        """A query failed without an answer: the next one is a plain read.  Returns 0."""
        self._index = 0
        self._seen = None
        return self._index


@dataclass(frozen=True, slots=True)
class Decision:
    """What a watch driver does after one query.

    ``event``: publish this snapshot (``Broadcaster.publish``, which sorts it:
    its instances come de-duplicated but in no particular order), or nothing.
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
    agent http://..."``); ``backoff`` (after errors the agent answered) defaults
    to 10 ms doubling to 2 s with jitter, ``probe`` (while nothing reaches the
    agent) to every 0.1-0.2 s (see "Recovery" in the module docstring).
    ``token_sent``: whether the queries carry an ACL token (for the
    default-deny message).  Not thread-safe: one per loop.
    """

    def __init__(
        self,
        *,
        required_tags: Sequence[str] = (),
        where: str = "watching a Consul service",
        backoff: Backoff | None = None,
        probe: Backoff | None = None,
        token_sent: bool = True,
    ) -> None:
        self._rules = BlockingIndex()
        self._token_sent = token_sent
        self._memo: Memo = {}
        self._info_memo: InfoMemo = {}
        self._seen_instances = False  # a non-empty answer proved read access
        self._warned_acl = False
        self._required_tags = tuple(required_tags)
        self._where = where
        self._backoff = backoff if backoff is not None else Backoff(curve=CONSUL_WATCH)
        self._probe = probe if probe is not None else Backoff(curve=CONSUL_PROBE)
        self._starting = 0  # start-up probes left: the agent listens again after refusing

    @property
    def index(self) -> int:
        """The index to ask the next query with (0: a plain read)."""
        return self._rules.index

    @property
    def unchanged_at(self) -> int | None:
        """:attr:`BlockingIndex.unchanged_at` of this loop."""
        return self._rules.unchanged_at

    @property
    def read_timeout(self) -> float | None:
        """Seconds the next plain read may take before it is given up and asked again
        (:data:`RECOVERY_READ_TIMEOUT` while the agent is down or starting up, see
        "Recovery"), or ``None`` for the usual timeout."""
        return RECOVERY_READ_TIMEOUT if self._starting > 0 else None

    def answered(
        self, raw_index: object, entries: object, *, default_deny: bool = False
    ) -> Decision:
        """An answer: its ``X-Consul-Index`` value, decoded JSON body (or
        :data:`UNREAD` when the index was :attr:`unchanged_at`), and whether it
        said ``X-Consul-Default-Acl-Policy: deny``."""
        step = self._rules.observe(raw_index)
        self._probe.reset()  # the agent answered: it is reachable
        self._starting = 0
        if step.unchanged:
            self._backoff.reset()
            return Decision()
        if entries is UNREAD:  # only an unchanged answer may be left unread
            return self.failed(RegistryUnavailableError(
                f"{self._where}: an answer at index {raw_index!r} was not read"))
        try:
            # Unordered: the Broadcaster the event goes to sorts it, once.
            infos: dict[str, InstanceInfo] = {}
            instances = service_instances(
                entries, required_tags=self._required_tags, source=self._where, memo=self._memo,
                ordered=False, infos=infos, info_memo=self._info_memo,
            )
        except UnreadableAnswerError as unreadable:
            error = RegistryUnavailableError(f"{self._where}: unreadable answer: {unreadable}")
            error.__cause__ = unreadable
            return self.failed(error)
        if entries:
            self._seen_instances = True
        denied: PermissionDeniedError | None = None
        if default_deny and step.publish and entries == [] and not self._seen_instances:
            denied = self._denied()
        event = Event(instances, info=infos) if step.publish and denied is None else None
        log = None
        if denied is not None and not self._warned_acl:
            self._warned_acl = True
            log = str(denied)
        if not step.back_off:
            self._backoff.reset()
            return Decision(event=event, error=denied, log=log)
        delay = self._backoff.next_delay()
        reason = f"{self._where}: {step.reason}; next query in {delay:.2f}s"
        return Decision(event=event, error=denied, delay=delay,
                        log=reason if log is None else f"{log}\n{reason}")

    def _denied(self) -> PermissionDeniedError:
        if self._token_sent:
            why = ("permission denied? the ACL token may lack service:read on the service "
                   "(and node:read)")
        else:
            why = ("permission denied: no ACL token was sent (set one with service:read and "
                   "node:read)")
        return PermissionDeniedError(
            f"{self._where}: Consul answered no instances under a default-deny ACL "
            f"policy: {why}, unless the service has no instances yet"
        )

    def failed(self, error: BaseException, *, reached: bool = True) -> Decision:
        """A query that got no usable answer; ``error`` is what subscribers will see.

        ``reached``: whether the request reached the agent (``False`` for a refused
        connection or a connect timeout); it picks the schedule of the next query
        (see "Recovery" in the module docstring).
        """
        self._rules.failed()
        if not reached:
            self._starting = RECOVERY_PROBES
            delay = self._probe.next_delay()
        elif self._starting > 0:
            self._starting -= 1
            delay = self._probe.next_delay()
        else:
            delay = self._backoff.next_delay()
        return Decision(error=error, delay=delay, log=f"{error}; retrying in {delay:.2f}s")
