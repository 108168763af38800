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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.dns.srv import SRVRecord, brief, is_address, shown
from kitsd.sd.instance import split_address

__all__ = [
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


@dataclass(frozen=True, slots=True)
class Lookup:
    """An SRV answer: its records, the target addresses (``None``: not resolved) and the
    smallest TTL among the records used."""

    records: tuple[SRVRecord, ...]
    addresses: Mapping[str, Sequence[str]] | None
    ttl: float


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
                          f"127.0.0.1:8600, not {shown(server)}") from None
    bare = host[1:-1] if host.startswith("[") else host
    if not is_address(bare):
        raise MisuseError(f"resolver must be an IP address (not a host name), as "
                          f"127.0.0.1:8600, not {shown(server)}")
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


async def lookup(resolver: Any, name: str, *, resolve: bool, tcp: bool = True) -> Lookup:
    """Look ``name`` up (over TCP with ``tcp``, else UDP falling back to TCP when the
    answer is truncated); with ``resolve``, the targets' addresses too.

    Raises :class:`NoRecords` for NXDOMAIN or no SRV records, and
    :class:`~kitsd.core.errors.RegistryUnavailableError` (chained) for a timeout,
    SERVFAIL, a refusal or any other resolver failure.  A target that does not
    resolve is left out of ``addresses`` (listed in ``failed_targets``).
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
    targets = sorted({record.target.rstrip(".").lower() for record in records} - {""})
    missing = [target for target in targets if target not in addresses]
    if missing:
        results = await asyncio.gather(
            *(_addresses(resolver, target, where, tcp) for target in missing)
        )
        for target, (found, found_ttl) in zip(missing, results, strict=True):
            if found:
                addresses[target] = found
                ttl = min(ttl, found_ttl)
    return Lookup(records, addresses, ttl)


async def _addresses(
    resolver: Any, target: str, where: str, tcp: bool
) -> tuple[list[str], float]:
    """IPv4 addresses of ``target``, or its IPv6 ones when it has none; ``([], 0)`` if none.
    Raises :class:`~kitsd.core.errors.RegistryUnavailableError` when the lookup fails."""
    dns = _import_dns()
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(target + ".", rdtype, search=False, tcp=tcp)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.DNSException, OSError) as error:
            raise _unavailable(f"{target} ({rdtype})", where, error) from error
        return [rr.address for rr in answer.rrset], float(answer.rrset.ttl)
    return [], 0.0
