"""``instancer_from_url``: build an instancer from one URL.

* ``static://h1:p1,h2:p2`` — a :class:`~sd.instancer.FixedInstancer`.
* ``etcd://host:port/prefix/`` — :class:`sd.etcd.EtcdInstancer` (needs ``kitsd[etcd]``).
* ``consul://host:port/service?tag=a&tag=b&passing=1`` —
  :class:`sd.consul.ConsulInstancer` (needs ``kitsd[consul]``).
* ``k8s://[namespace/]service[:port]`` — :class:`sd.k8s.EndpointSliceInstancer`
  (needs ``kitsd[k8s]`` for a kubeconfig).
"""

from __future__ import annotations

import importlib
import re
import urllib.parse
from typing import Protocol, cast

from kitsd.core.errors import MisuseError, clip, shown_value
from kitsd.sd.instancer import FixedInstancer, InstancerHandle

__all__ = ["instancer_from_url", "redact_url", "shown_parameter", "shown_url"]

_DRIVERS = {
    "etcd": ("kitsd.sd.etcd.url", "etcd"),
    "etcds": ("kitsd.sd.etcd.url", "etcd"),
    "consul": ("kitsd.sd.consul.url", "consul"),
    "consuls": ("kitsd.sd.consul.url", "consul"),
    "dnssrv": ("kitsd.sd.dns.url", "dns"),
    "zk": ("kitsd.sd.zk.url", "zk"),
    "k8s": ("kitsd.sd.k8s.url", "k8s"),
}


_WANT = ("(want static://, etcd://, etcds://, consul://, consuls://, dnssrv://, zk:// "
         "or k8s://)")


class _FromURL(Protocol):
    def instancer_from_url(self, url: urllib.parse.SplitResult) -> InstancerHandle: ...


_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z_-]{0,19}")


def redact_url(url: str) -> str:
    """``url`` fit for error messages and logs: user information replaced by ``***``
    (everything before the last ``@``, so a password holding ``/``, ``?`` or ``#``
    does not leak either), every query parameter value and the fragment replaced by
    ``***``, and cut to 200 characters.  Works on URLs too broken to parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    rest, hash_sign, _ = rest.partition("#")
    base, question, query = rest.partition("?")
    if question:
        query = re.sub(r"=[^&;]*", "=***", query)
    shown = f"{scheme}{sep}{base}{question}{query}{'#***' if hash_sign else ''}"
    return clip(shown, 200)


def shown_parameter(name: str) -> str:
    """A query parameter name fit for a message: a plain word, else ``***`` (it may
    be a secret pasted where a name goes)."""
    return name if _PLAIN_NAME.fullmatch(name) else "***"


def shown_url(parsed: urllib.parse.SplitResult) -> str:
    """A parsed URL fit for a message: ``***`` for the user part, the fragment,
    every parameter value and any parameter name that is not a plain word, so a
    secret put anywhere in the URL is never echoed.  Drivers' URL errors use it."""
    host = parsed.netloc.rpartition("@")[2]
    if "@" in parsed.netloc:
        host = f"***@{host}"
    pairs = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    query = "&".join(
        f"{shown_parameter(name)}={'***' if value else ''}"
        for name, value in pairs
    )
    if not pairs and parsed.query:
        query = "***"
    fragment = "***" if parsed.fragment else ""
    return clip(urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, query, fragment)),
                200)


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
