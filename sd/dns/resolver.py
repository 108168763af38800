"""The dnspython boundary: building a resolver, asking for SRV records, mapping errors.

Everything the DNS driver needs from dnspython goes through here, through its
public API (``dns.asyncresolver.Resolver``, ``dns.name``, ``dns.resolver``'s
exceptions).  The resolver is dnspython's *asyncio* one, so a lookup in flight
can be cancelled: :meth:`sd.dns.SRVInstancer.stop` never waits for a timeout.
dnspython is imported when a resolver is built, so ``import sd.dns`` works
without it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.core.redact import shown_address
from kitsd.sd.dns.srv import SRVRecord, TargetCache, brief, is_address, shown
from kitsd.sd.instance import split_address

__all__ = [
    "MAX_TARGET_LOOKUPS",
    "Lookup",
    "NoRecords",
    "check_name",
    "describe",
    "lookup",
    "make_resolver",
    "parse_server",
]

logger = logging.getLogger(__name__)

_DNS_PORT = 53

#: How many target address lookups one watch runs at once.
MAX_TARGET_LOOKUPS = 8


@dataclass(frozen=True, slots=True)
class Lookup:
    """An SRV answer: its records, the target addresses (``None``: not resolved), the
    smallest TTL among the records used, and the targets whose address lookup failed
    (left out of ``addresses``)."""

    records: tuple[SRVRecord, ...]
    addresses: Mapping[str, Sequence[str]] | None
    ttl: float
    failed_targets: tuple[str, ...] = ()


class NoRecords(Exception):
    """NXDOMAIN, or the name exists without SRV records: the set is empty."""


def _import_dns() -> Any:
    try:
        import dns.asyncresolver
        import dns.name
        import dns.rdatatype
        import dns.resolver
    except ImportError as error:
        raise ImportError(f"the DNS driver needs dnspython: pip install 'kitsd[dns]' ({error})") \
            from error
    return dns


def check_name(name: object) -> str:
    """``name`` if it is a DNS name dnspython accepts; raises ``TypeError`` /
    :class:`~kitsd.core.errors.MisuseError` naming it otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"SRV name must be a string, not {type(name).__name__}")
    text = name.strip()
    if not text or text != name or any(ord(char) <= 0x20 or char == "\x7f" for char in name):
        raise MisuseError(f"SRV name must be a DNS name, as _users._tcp.example.com, "
                          f"not {shown(name)}")
    dns = _import_dns()
    try:
        dns.name.from_text(text)
    except dns.exception.DNSException as error:
        raise MisuseError(f"SRV name {shown(name)} is not a DNS name ({error})") from None
    return text


def parse_server(server: object) -> tuple[str, int]:
    """``(address, port)`` of a resolver given as ``ip``, ``ip:port`` or ``[ipv6]:port``.

    dnspython talks to name servers by address, so a host name is refused
    (:class:`~kitsd.core.errors.MisuseError`); ``TypeError`` for a non-string.
    """
    if not isinstance(server, str):
        raise TypeError(f"resolver must be a 'host:port' string, not {type(server).__name__}")
    try:
        host, port = split_address(server, default_port=_DNS_PORT)
    except MisuseError:
        raise MisuseError(f"resolver must be an IP address with an optional port, as "
                          f"127.0.0.1:8600, not {shown_address(server)}") from None
    bare = host[1:-1] if host.startswith("[") else host
    if not is_address(bare):
        raise MisuseError(f"resolver must be an IP address (not a host name), as "
                          f"127.0.0.1:8600, not {shown_address(server)}")
    return bare, port


def make_resolver(server: tuple[str, int] | None, *, timeout: float) -> Any:
    """A ``dns.asyncresolver.Resolver``: the system's (``/etc/resolv.conf``) when
    ``server`` is ``None``, else one asking only ``server``.  ``timeout`` bounds
    each lookup.  No cache: every refresh asks the server.  Raises
    :class:`~kitsd.core.errors.MisuseError` when the system has no resolver configured."""
    dns = _import_dns()
    try:
        resolver = dns.asyncresolver.Resolver(configure=server is None)
    except (dns.resolver.NoResolverConfiguration, OSError) as error:
        raise MisuseError(
            f"no system DNS resolver is configured ({error}); pass resolver='ip:port'"
        ) from error
    if server is not None:
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)  # per try, so one lost UDP packet is retried
    resolver.cache = None
    return resolver


def _unavailable(name: str, where: str, error: BaseException) -> RegistryUnavailableError:
    text = str(error) or type(error).__name__
    mapped = RegistryUnavailableError(
        f"DNS lookup of {name} at {where} failed: {brief(text)}"
    )
    mapped.__cause__ = error
    return mapped


def describe(resolver: Any) -> str:
    """The resolver's name servers, for messages."""
    servers = [str(server) for server in getattr(resolver, "nameservers", ())]
    port = getattr(resolver, "port", _DNS_PORT)
    if port != _DNS_PORT:
        servers = [f"{server}:{port}" for server in servers]
    return ",".join(servers) or "the system resolver"


async def lookup(
    resolver: Any, name: str, *, resolve: bool, tcp: bool = True,
    targets: TargetCache | None = None, limit: int = MAX_TARGET_LOOKUPS,
) -> Lookup:
    """Look ``name`` up (over TCP with ``tcp``, else UDP falling back to TCP when the
    answer is truncated); with ``resolve``, the targets' addresses too.

    Targets the server sent no glue for are looked up at most ``limit`` at a time,
    all within one resolver ``lifetime``, through ``targets`` (what they resolved to
    before: see :class:`sd.dns.srv.TargetCache`; ``None``: a cache for this call
    only).  A target whose lookup fails keeps its last addresses, or is left out
    and named in ``failed_targets``: the targets that did resolve are published.

    Raises :class:`NoRecords` for NXDOMAIN or no SRV records, and
    :class:`~kitsd.core.errors.RegistryUnavailableError` (chained) for a timeout,
    SERVFAIL, a refusal or any other resolver failure -- of the SRV lookup, or of
    every target lookup when no target resolved at all.
    """
    dns = _import_dns()
    where = describe(resolver)
    try:
        answer = await resolver.resolve(name, "SRV", search=False, tcp=tcp)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as error:
        raise NoRecords(str(error)) from error
    except dns.exception.DNSException as error:
        raise _unavailable(name, where, error) from error
    except OSError as error:  # e.g. no route to the name server
        raise _unavailable(name, where, error) from error
    rrset = answer.rrset
    records = tuple(
        SRVRecord(int(rr.priority), int(rr.weight), int(rr.port), rr.target.to_text())
        for rr in rrset
    )
    ttl = float(rrset.ttl)
    if not resolve:
        return Lookup(records, None, ttl)
    addresses: dict[str, list[str]] = {}
    for extra in answer.response.additional:  # glue the server sent with the answer
        if extra.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            key = extra.name.to_text().rstrip(".").lower()
            addresses.setdefault(key, []).extend(rr.address for rr in extra)
            ttl = min(ttl, float(extra.ttl))
    named = sorted({record.target.rstrip(".").lower() for record in records} - {""})
    missing = [target for target in named if target not in addresses]
    failed: list[str] = []
    if missing:
        cache = targets if targets is not None else TargetCache()
        clock = asyncio.get_running_loop().time
        todo: list[str] = []
        for target in missing:
            known = cache.fresh(target, clock())
            if known is None:
                todo.append(target)
            elif known:
                addresses[target] = list(known)
                ttl = min(ttl, cache.left(target, clock()))
        if todo:
            ttl = min(ttl, await _look_up_targets(resolver, todo, where, tcp, cache, addresses,
                                                  failed, limit))
        cache.keep_only(named)
        if failed and not any(addresses.get(target) for target in named):
            raise RegistryUnavailableError(
                f"DNS lookup of {name} at {where}: none of its {len(named)} target(s) could"
                f" be resolved (e.g. {brief(failed[0])})")
    return Lookup(records, addresses, ttl, tuple(failed))


async def _look_up_targets(
    resolver: Any, todo: list[str], where: str, tcp: bool, cache: TargetCache,
    addresses: dict[str, list[str]], failed: list[str], limit: int,
) -> float:
    """Look up ``todo``, ``limit`` at a time, each within one try of the resolver
    (its ``timeout``) and all within its ``lifetime``; fill ``addresses`` and
    ``failed``, update ``cache``; returns the smallest TTL seen."""
    loop = asyncio.get_running_loop()
    lifetime = float(getattr(resolver, "lifetime", 5.0) or 5.0)
    one_try = min(lifetime, float(getattr(resolver, "timeout", lifetime) or lifetime))
    deadline = loop.time() + lifetime
    gate = asyncio.Semaphore(limit)

    async def one(target: str) -> tuple[list[str], float, float | None]:
        async with gate:
            left = min(one_try, deadline - loop.time())
            if left <= 0:
                raise TimeoutError(f"no time left to look up {target}")
            async with asyncio.timeout(left):  # a silent target holds a slot one try long
                return await _addresses(resolver, target, where, tcp)

    results = await asyncio.gather(*(one(target) for target in todo), return_exceptions=True)
    smallest = math.inf
    for target, result in zip(todo, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):  # CancelledError, KeyboardInterrupt...
                raise result
            logger.debug("address lookup of SRV target %s failed: %s", target, result)
            kept = cache.stale(target)
            if kept:
                addresses[target] = list(kept)
            else:
                failed.append(target)
            continue
        found, found_ttl, negative_ttl = result
        if found:
            cache.resolved(target, found, found_ttl, loop.time())
            addresses[target] = found
            smallest = min(smallest, found_ttl)
        else:
            cache.missing(target, negative_ttl, loop.time())
    return smallest


async def _addresses(
    resolver: Any, target: str, where: str, tcp: bool
) -> tuple[list[str], float, float | None]:
    """IPv4 addresses of ``target``, or its IPv6 ones when it has none: ``(addresses,
    ttl, None)``; ``([], 0, negative_ttl)`` when it has none (NXDOMAIN ends it at the
    A query: the name does not exist).  Raises
    :class:`~kitsd.core.errors.RegistryUnavailableError` when the lookup fails."""
    dns = _import_dns()
    negative: float | None = None
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(target + ".", rdtype, search=False, tcp=tcp)
        except dns.resolver.NXDOMAIN as error:
            return [], 0.0, _negative_ttl(error)
        except dns.resolver.NoAnswer as error:
            negative = _negative_ttl(error)
            continue
        except (dns.exception.DNSException, OSError) as error:
            raise _unavailable(f"{target} ({rdtype})", where, error) from error
        return [rr.address for rr in answer.rrset], float(answer.rrset.ttl), None
    return [], 0.0, negative


def _negative_ttl(error: Any) -> float | None:
    """RFC 2308: how long a negative answer may be cached, from the SOA in its authority
    section (the smaller of the SOA record's TTL and its MINIMUM); ``None`` without one."""
    dns = _import_dns()
    try:
        if isinstance(error, dns.resolver.NXDOMAIN):
            responses = list(error.responses().values())
        else:
            responses = [error.response()]
    except (KeyError, AttributeError, TypeError):
        return None
    for response in responses:
        for rrset in getattr(response, "authority", ()):
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return None
