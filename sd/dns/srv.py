"""DNS SRV answers → instances, and when to ask again.

Pure: no I/O, no threads, no clock.  The watch in :mod:`sd.dns.instancer`
asks the resolver and hands what it heard to the functions here.

Theory of operation
-------------------
An SRV name (``_users._tcp.service.consul``) answers with records of
``priority weight port target`` (RFC 2782).  Each record is one instance:

* with ``resolve=True`` (the default) the target's addresses -- from the
  answer's additional section when the server sent them (Consul does), else
  from A (or, when there is none, AAAA) lookups -- give ``address:port``
  instances, so the instance strings work with any HTTP client;
* with ``resolve=False`` the target name is kept (``web-0.users.ns.svc:8080``),
  as go-kit's ``dnssrv`` does, and the client resolves it at connect time.

A target of ``.`` means "decidedly not available here" (RFC 2782) and gives no
instance; a record with port 0, a target that is not a host name, or a target
with no address is skipped with a (truncated) warning.  Priority and weight
stay in each :class:`SRVInstance`, ready to be published as instance metadata.

When to ask again (:class:`RefreshPolicy`):

================================  ===========================================
outcome                           next lookup after
================================  ===========================================
records (TTL ``t``)               ``interval`` if set, else ``t`` clamped to
                                  ``[min_ttl, max_ttl]``
NXDOMAIN / no SRV records         ``interval`` if set, else ``min_ttl``
                                  (publish an empty set)
timeout, SERVFAIL, refused, ...   backoff, 0.1 s doubling, never longer than
                                  the longest regular wait (publish the error,
                                  keep the last instances)
================================  ===========================================

``min_ttl`` and ``interval`` are at least :data:`MIN_REFRESH` seconds: a name is
never looked up more than ten times a second, whatever its TTL says.

Targets without glue (:class:`TargetCache`): each is looked up on its own, and
what it resolved to is remembered --

* addresses for their TTL (a TTL of 0 asks again at the next refresh);
* "no address" (NXDOMAIN, or neither A nor AAAA) for the negative TTL of the
  answer's SOA (RFC 2308), but at least :data:`NEGATIVE_TTL` seconds, doubling
  while the target keeps having no address, never longer than ``max_ttl``:
  200 targets that never resolve cost a few queries a minute, not 200 per
  refresh;
* a failed lookup (timeout, SERVFAIL) is not remembered: the target keeps its
  last addresses, if it had any, and is asked again at the next refresh.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.backoff import DNS_RETRY, Curve
from kitsd.sd.instance import join_host_port
from kitsd.sd.instance_info import InstanceInfo

__all__ = [
    "DNS_RETRY",
    "MIN_REFRESH",
    "NEGATIVE_TTL",
    "RefreshPolicy",
    "SRVInstance",
    "SRVRecord",
    "TargetCache",
    "brief",
    "infos_of",
    "instances_of",
    "is_address",
    "shown",
    "translate",
]

logger = logging.getLogger(__name__)

_SHOWN = 64

#: Seconds: the shortest ``min_ttl`` or ``interval`` a watch accepts.
MIN_REFRESH = 0.1
#: Seconds a target without an address is not asked again, at least (doubling after).
NEGATIVE_TTL = 5.0


def brief(text: str, limit: int = 160) -> str:
    """``text`` cut to ``limit`` characters (with ``...``), for error messages."""
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value: str) -> str:
    """``repr`` of at most 64 characters of ``value`` (with its length if cut)."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class SRVRecord:
    """One SRV record as the resolver returned it (``target`` may end with ``.``)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SRVInstance:
    """One instance from an SRV answer, with the record's priority and weight.

    ``instance`` is the ``host:port`` string subscribers receive; ``target`` the
    record's target name (without the trailing dot).
    """

    instance: str
    priority: int
    weight: int
    target: str


def _target_name(target: str) -> str:
    return target[:-1].lower() if target.endswith(".") else target.lower()


def translate(
    records: Iterable[SRVRecord],
    addresses: Mapping[str, Sequence[str]] | None,
    *,
    source: str = "DNS",
    skipped: list[str] | None = None,
    failed: Collection[str] = (),
) -> tuple[SRVInstance, ...]:
    """The instances in an SRV answer, sorted by instance string.

    ``addresses`` maps a target name (lower case, no trailing dot) to its
    addresses; ``None`` keeps target names as hosts.  Bad records are skipped
    with a warning naming ``source`` -- or, given a ``skipped`` list, with the
    warning appended to it (a watch re-resolving every second logs each bad
    record once, not every second).  ``failed`` names targets whose address lookup
    failed (said so in their warning).  Nothing here raises on registry data.
    """

    def skip(message: str) -> None:
        if skipped is None:
            logger.warning("%s", message)
        else:
            skipped.append(message)

    found: dict[str, SRVInstance] = {}
    for record in records:
        target = _target_name(record.target)
        if not target:  # "." : the service is decidedly not available at this name
            continue
        if not 1 <= record.port <= 65535:
            skip(f"skipping SRV record of {source}: port {record.port} of {shown(target)}"
                 " is outside 1-65535")
            continue
        hosts: Sequence[str]
        if addresses is None:
            hosts = (target,)
        else:
            hosts = addresses.get(target, ())
            if not hosts:
                why = ("its address lookup failed (asked again at the next refresh)"
                       if target in failed else "it has no address")
                skip(f"skipping SRV target {shown(target)} of {source}: {why}")
                continue
        for host in hosts:
            try:
                instance = join_host_port(host, record.port)
            except InvalidInstanceError:
                skip(f"skipping SRV target {shown(host)} of {source}:"
                     " not a host name or address")
                continue
            known = found.get(instance)
            # the same instance from two records: keep the preferred (lowest) priority
            if known is None or (record.priority, -record.weight) < (known.priority,
                                                                     -known.weight):
                found[instance] = SRVInstance(instance, record.priority, record.weight, target)
    return tuple(found[key] for key in sorted(found))


def instances_of(translated: Iterable[SRVInstance]) -> tuple[str, ...]:
    """The sorted instance strings of a translation."""
    return tuple(sorted({item.instance for item in translated}))


def infos_of(translated: Iterable[SRVInstance]) -> dict[str, InstanceInfo]:
    """The metadata of each instance of a translation: weight from the SRV weight
    (1 for all when every weight is 0), ``meta`` ``srv.priority`` and ``srv.target``."""
    items = list(translated)
    weighted = any(item.weight > 0 for item in items)
    return {
        item.instance: InstanceInfo(
            weight=item.weight if weighted else 1,
            meta={"srv.priority": str(item.priority), "srv.target": item.target},
        )
        for item in items
    }


def is_address(text: str) -> bool:
    """Whether ``text`` is an IP address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to look up again (see the module docstring's table).

    ``interval`` set: a fixed period, as go-kit's ``dnssrv.NewInstancer(name,
    ttl, ...)``.  Otherwise the record TTL clamped to ``[min_ttl, max_ttl]``.
    Raises ``TypeError`` / :class:`~kitsd.core.errors.MisuseError` naming the argument
    for a value that is not positive finite seconds, or ``min_ttl > max_ttl``.
    """

    min_ttl: float = 1.0
    max_ttl: float = 300.0
    interval: float | None = None

    def __post_init__(self) -> None:
        # a name is looked up at most ten times a second, whatever its TTL says
        validate.seconds("min_ttl", self.min_ttl, minimum=MIN_REFRESH)
        validate.seconds("max_ttl", self.max_ttl)
        validate.optional_seconds("interval", self.interval, minimum=MIN_REFRESH)
        if self.min_ttl > self.max_ttl:
            raise MisuseError("min_ttl must not exceed max_ttl")

    def after_answer(self, ttl: float) -> float:
        """Seconds until the next lookup after an answer with records of TTL ``ttl``."""
        if self.interval is not None:
            return self.interval
        return min(self.max_ttl, max(self.min_ttl, float(ttl)))

    def after_empty(self) -> float:
        """Seconds until the next lookup after NXDOMAIN or an answer without records."""
        return self.interval if self.interval is not None else self.min_ttl

    @property
    def longest(self) -> float:
        """The longest regular wait: the cap on the backoff after failures."""
        return self.interval if self.interval is not None else self.max_ttl

    def retry_curve(self) -> Curve:
        """The backoff curve after failed lookups (:data:`DNS_RETRY`, capped)."""
        return DNS_RETRY.capped(self.longest)


@dataclass(slots=True)
class _Target:
    addresses: tuple[str, ...]  # () : no address
    expires: float
    misses: int = 0  # negative answers in a row


class TargetCache:
    """What each SRV target without glue resolved to, and until when (see the module
    docstring).  Pure: every method takes ``now``; one per watch, used from its loop.

    ``max_ttl`` caps every lifetime (the watch's ``max_ttl``).
    """

    def __init__(self, *, max_ttl: float = 300.0) -> None:
        self._max_ttl = max_ttl
        self._targets: dict[str, _Target] = {}

    def fresh(self, target: str, now: float) -> tuple[str, ...] | None:
        """The addresses remembered for ``target`` (``()``: it has none) while still
        valid at ``now``; ``None`` when it must be looked up."""
        entry = self._targets.get(target)
        if entry is None or now >= entry.expires:
            return None
        return entry.addresses

    def left(self, target: str, now: float) -> float:
        """Seconds the entry of ``target`` stays valid (0 when there is none)."""
        entry = self._targets.get(target)
        return 0.0 if entry is None else max(0.0, entry.expires - now)

    def stale(self, target: str) -> tuple[str, ...]:
        """The last addresses ``target`` resolved to, even expired (``()`` if none):
        what a target whose lookup failed keeps."""
        entry = self._targets.get(target)
        return () if entry is None else entry.addresses

    def resolved(self, target: str, addresses: Sequence[str], ttl: float, now: float) -> None:
        """``target`` resolved to ``addresses`` with TTL ``ttl``."""
        self._targets[target] = _Target(tuple(addresses), now + min(max(ttl, 0.0),
                                                                    self._max_ttl))

    def missing(self, target: str, negative_ttl: float | None, now: float) -> float:
        """``target`` has no address (its SOA's negative TTL, if the answer had one);
        returns for how long that is remembered."""
        entry = self._targets.get(target)
        misses = entry.misses + 1 if entry is not None and not entry.addresses else 1
        backoff = NEGATIVE_TTL * float(2 ** min(misses - 1, 16))
        lifetime = min(self._max_ttl, max(backoff, negative_ttl or 0.0))
        self._targets[target] = _Target((), now + lifetime, misses)
        return lifetime

    def keep_only(self, targets: Iterable[str]) -> None:
        """Forget every target not in ``targets`` (those the last answer named)."""
        wanted = set(targets)
        for target in [name for name in self._targets if name not in wanted]:
            del self._targets[target]

    def __len__(self) -> int:
        return len(self._targets)
