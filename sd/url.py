"""``instancer_from_url``: build an instancer from one URL.

* ``static://h1:p1,h2:p2`` — a :class:`~sd.instancer.FixedInstancer`.
* ``etcd://host:port/prefix/`` — :class:`sd.etcd.EtcdInstancer` (needs ``kitsd[etcd]``).
* ``consul://host:port/service?tag=a&tag=b&passing=1`` —
  :class:`sd.consul.ConsulInstancer` (needs ``kitsd[consul]``).
"""

from __future__ import annotations

import importlib
import re
import urllib.parse
from typing import Protocol, cast

from sd.errors import MisuseError, clip, shown_value
from sd.instancer import FixedInstancer, InstancerHandle

__all__ = ["instancer_from_url", "redact_url"]

_DRIVERS = {
    "etcd": ("sd.etcd.url", "etcd"),
    "etcds": ("sd.etcd.url", "etcd"),
    "consul": ("sd.consul.url", "consul"),
    "dnssrv": ("sd.dns.url", "dns"),
    "zk": ("sd.zk.url", "zk"),
}


_WANT = "(want static://, etcd://, etcds://, consul://, dnssrv:// or zk://)"


class _FromURL(Protocol):
    def instancer_from_url(self, url: urllib.parse.SplitResult) -> InstancerHandle: ...


# Query parameters whose value is a secret, whatever the driver: ``?token=...`` and kin.
_SECRET_PARAMETER = re.compile(
    r"(?i)((?:^|[?&;])[\w.-]*(?:token|passw(?:or)?d|pwd|secret|auth|credential|key)[\w.-]*=)"
    r"[^&;#]*"
)


def redact_url(url: str) -> str:
    """``url`` fit for error messages and logs: user information replaced by ``***``
    (everything before the last ``@``, so a password holding ``/``, ``?`` or ``#``
    does not leak either), the values of secret-looking query parameters (``token``,
    ``password``, ``secret``, ``key``, ...) replaced by ``***``, and cut to 200
    characters.  ``consul://TOKEN@host/...`` never shows the token."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    rest = _SECRET_PARAMETER.sub(r"\1***", rest)
    return clip(f"{scheme}{sep}{rest}", 200)


def instancer_from_url(url: str) -> InstancerHandle:
    """An instancer for ``url``; raises ``ValueError`` for a scheme or URL it cannot use."""
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else shown_value(url)
        raise MisuseError(f"not an instancer URL: {shown} {_WANT}")
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as error:
        raise MisuseError(f"not a valid URL: {redact_url(url)} ({error})") from error
    scheme = parsed.scheme.lower()
    if scheme == "static":
        body = url.split("://", 1)[1]
        items = [item for item in body.split(",") if item.strip()]
        if not items:
            raise MisuseError(f"static URL names no instances: {redact_url(url)}")
        return FixedInstancer(items)
    if scheme in _DRIVERS:
        module_name, extra = _DRIVERS[scheme]
        try:
            module = cast(_FromURL, importlib.import_module(module_name))
        except ImportError as error:
            raise MisuseError(
                f"{scheme}:// needs the {extra} driver: pip install 'kitsd[{extra}]' ({error})"
            ) from error
        try:
            return module.instancer_from_url(parsed)
        except MisuseError:
            raise
        except ValueError as error:  # e.g. urlsplit's lazy port check, in the driver
            raise MisuseError(f"not a valid {scheme} URL: {redact_url(url)} ({error})") from error
    raise MisuseError(
        f"unknown instancer URL scheme {parsed.scheme!r} in {redact_url(url)}"
        f" {_WANT}"
    )
