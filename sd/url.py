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
import urllib.parse
from typing import Protocol, cast

from kitsd.core.errors import MisuseError, shown_value
from kitsd.core.redact import redact_url, shown_parameter, shown_url
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
            # neither its text nor the error itself: urlsplit's says "as 'S3CRET'"
            raise MisuseError(f"not a valid {scheme} URL: {redact_url(url)}"
                              f" ({type(error).__name__})") from None
    raise MisuseError(
        f"unknown instancer URL scheme {parsed.scheme!r} in {redact_url(url)}"
        f" {_WANT}"
    )
