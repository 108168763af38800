"""``instancer_from_url``: build an instancer from one URL.

* ``static://h1:p1,h2:p2`` — a :class:`~sd.instancer.FixedInstancer`.
* ``etcd://host:port/prefix/`` — :class:`sd.etcd.EtcdInstancer` (needs ``kitsd[etcd]``).
* ``consul://host:port/service?tag=a&tag=b&passing=1`` —
  :class:`sd.consul.ConsulInstancer` (needs ``kitsd[consul]``).
"""

from __future__ import annotations

import importlib
import urllib.parse
from typing import Protocol, cast

from sd.errors import MisuseError
from sd.instancer import FixedInstancer, InstancerHandle

__all__ = ["instancer_from_url"]

_DRIVERS = {"etcd": ("sd.etcd.url", "etcd"), "consul": ("sd.consul.url", "consul")}


class _FromURL(Protocol):
    def instancer_from_url(self, url: urllib.parse.SplitResult) -> InstancerHandle: ...


def instancer_from_url(url: str) -> InstancerHandle:
    """An instancer for ``url``; raises ``ValueError`` for a scheme or URL it cannot use."""
    if not isinstance(url, str) or "://" not in url:
        raise MisuseError(f"not an instancer URL: {url!r} (want static://, etcd:// or consul://)")
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 - urlsplit checks the port lazily; make it check now
    except ValueError as error:
        raise MisuseError(f"not a valid URL: {url!r} ({error})") from error
    scheme = parsed.scheme.lower()
    if scheme == "static":
        body = url.split("://", 1)[1]
        items = [item for item in body.split(",") if item.strip()]
        if not items:
            raise MisuseError(f"static URL names no instances: {url!r}")
        return FixedInstancer(items)
    if scheme in _DRIVERS:
        module_name, extra = _DRIVERS[scheme]
        try:
            module = cast(_FromURL, importlib.import_module(module_name))
        except ImportError as error:
            raise MisuseError(
                f"{scheme}:// needs the {extra} driver: pip install 'kitsd[{extra}]' ({error})"
            ) from error
        return module.instancer_from_url(parsed)
    raise MisuseError(
        f"unknown instancer URL scheme {parsed.scheme!r} in {url!r}"
        " (want static://, etcd:// or consul://)"
    )
