"""Instance strings: ``host:port``, IPv6 hosts in brackets.

Pure functions: parse, normalise, and clean a batch coming from a registry.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable

from kitsd.core.errors import InvalidInstanceError, clip

__all__ = [
    "clean_instances",
    "join_host_port",
    "normalize_instance",
    "split_address",
    "split_instance",
]

logger = logging.getLogger(__name__)

# RFC 1123 host names; underscores are tolerated because real registries hold them.
# Used with fullmatch: a "$" would also match before a trailing newline ("evil\n").
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")

# An instance already in canonical form: a lower-case host name (which includes every
# dotted-quad IPv4 address ``ipaddress`` accepts: those are written canonically or
# rejected) and a port in 1-65535 without leading zeros.  Registries hand back the same
# canonical strings on every answer, so normalising them skips ``ipaddress`` and
# returns the very string it was given.  Anything else takes the full path below.
_CANONICAL = re.compile(
    r"(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?"
    r":(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
).fullmatch
# With at most this many characters the host part is within the 253 a host name may have.
_SHORT = 254


def _check_port(value: object, port: str) -> int:
    if not port:
        raise InvalidInstanceError(value, "no port")
    if not port.isascii() or not port.isdigit():
        # not echoed: a password typed where the port goes ("user:secret") lands here
        raise InvalidInstanceError(value, "port is not a number")
    # A long run of digits is out of range; int() would refuse past 4,300 of them.
    digits = port.lstrip("0")
    number = int(digits or "0") if len(digits) <= 5 else 0
    if not 1 <= number <= 65535:
        raise InvalidInstanceError(value, f"port {clip(port)} is outside 1-65535")
    return number


def _check_host(value: object, host: str) -> str:
    # No IP address parsing here: ``host`` has no ':' (so it is not IPv6), and every
    # IPv4 address ``ipaddress`` accepts is a valid host name already in its canonical
    # form (leading zeros and other spellings are rejected there, and are host names here).
    if not host:
        raise InvalidInstanceError(value, "no host")
    if _HOSTNAME.fullmatch(host) is None:
        raise InvalidInstanceError(value, f"host {clip(host)!r} is not a host name or IP address")
    return host.lower()


def split_instance(value: object) -> tuple[str, int]:
    """Split ``value`` into ``(host, port)``; IPv6 hosts come back without brackets.

    Raises :class:`kitsd.core.errors.InvalidInstanceError` (a ``ValueError``) naming the value
    when it is not a string of the form ``host:port`` with a port in 1-65535.
    """
    if not isinstance(value, str):
        raise InvalidInstanceError(value, "not a string")
    text = value.strip()
    if not text:
        raise InvalidInstanceError(value, "empty")
    if "@" in text:
        # Whatever precedes it is user information, maybe a password: never echoed.
        raise InvalidInstanceError(value, "user information ('user:password@') is not allowed")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise InvalidInstanceError(value, "unclosed '['")
        host, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise InvalidInstanceError(value, "no port")
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInstanceError(value, f"{clip(host)!r} is not an IPv6 address") from None
        return str(address), _check_port(value, rest[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        raise InvalidInstanceError(value, "no port")
    if ":" in host:
        raise InvalidInstanceError(value, "IPv6 hosts must be in brackets, as [::1]:80")
    return _check_host(value, host), _check_port(value, port)


def split_address(value: object, *, default_port: int | None = None) -> tuple[str, int]:
    """Split a server address ``host:port`` for building a URL or a gRPC target: as
    :func:`split_instance`, but an IPv6 host keeps its brackets.  With ``default_port``
    a bare host (``etcd1``, ``[::1]``) is accepted.  Raises ``InvalidInstanceError``."""
    if default_port is not None and isinstance(value, str):
        text = value.strip()
        if text.endswith("]") or (text and ":" not in text):
            value = f"{text}:{default_port}"
    host, port = split_instance(value)
    return (f"[{host}]" if ":" in host else host), port


def join_host_port(host: str, port: int | str) -> str:
    """Build a normalised instance string from a host and a port (IPv6 gets brackets)."""
    if type(port) is int and type(host) is str and ":" not in host:  # a registry answer
        text = f"{host}:{port}"
        if len(text) <= _SHORT and _CANONICAL(text) is not None:
            return text
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return normalize_instance(text)


def normalize_instance(value: object) -> str:
    """Return the canonical form of an instance string, or raise ``InvalidInstanceError``.

    Host names are lower-cased and IP addresses written in their compressed form,
    so ``[0:0::1]:80`` and ``[::1]:80`` are the same instance.
    """
    if type(value) is str and len(value) <= _SHORT and _CANONICAL(value) is not None:
        return value
    host, port = split_instance(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def clean_instances(values: Iterable[object], *, source: str = "registry") -> tuple[str, ...]:
    """Normalise, de-duplicate and sort instances coming from a registry.

    Invalid values are skipped with a warning naming ``source``; they never raise,
    since one bad registry entry must not hide the good ones.
    """
    good: set[str] = set()
    add, canonical = good.add, _CANONICAL
    for value in values:
        # The fast path of normalize_instance, inlined: this loop runs once per entry
        # of every registry answer.
        if type(value) is str and len(value) <= _SHORT and canonical(value) is not None:
            add(value)
            continue
        try:
            add(normalize_instance(value))
        except InvalidInstanceError as error:
            logger.warning("skipping %s from %s", error, source)
    return tuple(sorted(good))

