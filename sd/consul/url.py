"""``consul://host:port/service?tag=a&tag=b&passing=1`` URLs, for :func:`sd.instancer_from_url`.

* ``host:port``: the agent's HTTP address (default ``127.0.0.1:8500``; IPv6 in
  brackets).
* ``/service``: the Consul service name (required).
* ``tag``: repeatable; keep instances carrying every tag.
* ``passing``: ``1`` (default) for instances whose checks all pass, ``0`` to
  include warning and critical ones too.
* ``dc``: a datacenter other than the agent's.

The ACL token comes from the environment, ``KITSD_CONSUL_TOKEN`` or else
``CONSUL_HTTP_TOKEN``, never from the URL (a URL ends up in logs and shell
history): a URL with a ``user:password@`` part is refused without being echoed.
The instancer owns the client it builds and closes its HTTP session on ``stop()``.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from sd.consul.client import connect
from sd.consul.instancer import ConsulInstancer
from sd.errors import MisuseError

__all__ = ["TOKEN_ENV", "ConsulURL", "instancer_from_url", "parse_url"]

TOKEN_ENV = ("KITSD_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN")
"""Environment variables read, in order, for the ACL token."""

_KNOWN = {"tag", "passing", "dc"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _safe(parsed: urllib.parse.SplitResult) -> str:
    host = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, parsed.query, ""))


@dataclass(frozen=True, slots=True)
class ConsulURL:
    """The settings a ``consul://`` URL carries (the token is never one of them)."""

    address: str
    service: str
    tags: tuple[str, ...] = ()
    passing_only: bool = True
    dc: str | None = None


def parse_url(parsed: urllib.parse.SplitResult) -> ConsulURL:
    """The settings in a ``consul://`` URL, checked.

    Raises :class:`sd.errors.MisuseError` (a ``ValueError``) saying what is wrong.
    """
    shown = _safe(parsed)
    if "@" in parsed.netloc:
        raise MisuseError(
            f"credentials do not belong in a consul:// URL ({shown}): set "
            f"{TOKEN_ENV[0]} instead"
        )
    try:
        port = parsed.port or 8500
    except ValueError as error:
        raise MisuseError(f"bad port in {shown}: {error}") from error
    host = parsed.hostname or "127.0.0.1"
    service = urllib.parse.unquote(parsed.path.strip("/"))
    if not service or "/" in service:
        raise MisuseError(f"a consul:// URL names one service as its path, as "
                          f"consul://127.0.0.1:8500/web: {shown}")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise MisuseError(f"unknown consul:// URL parameter(s) {unknown} in {shown}"
                          f" (known: {sorted(_KNOWN)})")
    tags = query.get("tag", [])
    if any(not tag.strip() for tag in tags):
        raise MisuseError(f"empty tag in {shown}")
    passing_values = query.get("passing", ["1"])
    passing_text = passing_values[-1].strip().lower()
    if len(passing_values) > 1 or passing_text not in _TRUE | _FALSE:
        raise MisuseError(f"passing must be given once, as 1 or 0, in {shown}")
    dc_values = query.get("dc", [])
    if len(dc_values) > 1 or any(not value.strip() for value in dc_values):
        raise MisuseError(f"dc must be given at most once, not empty, in {shown}")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ConsulURL(
        address=address,
        service=service,
        tags=tuple(tags),
        passing_only=passing_text in _TRUE,
        dc=dc_values[0] if dc_values else None,
    )


def _token() -> str | None:
    for name in TOKEN_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def instancer_from_url(parsed: urllib.parse.SplitResult) -> ConsulInstancer:
    """A :class:`ConsulInstancer` for a parsed ``consul://`` URL (see the module docstring).

    Raises :class:`sd.errors.MisuseError` for a URL it cannot use.  Agent
    failures do not raise: they arrive as error events.
    """
    settings = parse_url(parsed)
    client = connect(settings.address, token=_token(), dc=settings.dc)
    try:
        return ConsulInstancer(
            client,
            settings.service,
            tags=settings.tags,
            passing_only=settings.passing_only,
            owns_client=True,
        )
    except BaseException:
        client.close()
        raise
