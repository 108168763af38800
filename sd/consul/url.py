"""``consul://`` and ``consuls://`` URLs, for :func:`sd.instancer_from_url`.

::

    consul://host:port/service?tag=a&tag=b&passing=1&dc=eu1
    consuls://host:port/service?ca=/etc/consul/ca.pem&cert=/etc/kitsd/client.pem&key=/etc/kitsd/client-key.pem

* ``consul://`` talks plain HTTP to the agent (default ``127.0.0.1:8500``);
  ``consuls://`` talks HTTPS (default port 8501, Consul's HTTPS port),
  verifying the agent's certificate.
* ``host:port``: the agent's address (IPv6 in brackets).  Port 0 or a port
  outside 1-65535 is an error.
* ``/service``: the Consul service name (required).
* ``tag``: repeatable; keep instances carrying every tag.
* ``passing``: ``1`` (default) for instances whose checks all pass, ``0`` to
  include warning and critical ones too.
* ``dc``: a datacenter other than the agent's.
* ``consuls://`` only: ``ca`` (a CA file or directory to verify the agent
  with; default: the certifi bundle), ``cert`` (a client certificate, for an
  agent with ``verify_incoming``: mTLS) and ``key`` (its private key, if not
  in the ``cert`` file).  Files are paths on this machine.

The ACL token comes from the environment, ``KITSD_CONSUL_TOKEN`` or else
``CONSUL_HTTP_TOKEN``, never from the URL (a URL ends up in logs and shell
history): a URL with a ``user:password@`` part, or a ``token=`` (or any
other unknown) parameter, is refused, and error messages show the URL with
its user part, every parameter value and its fragment replaced by ``***``.
The instancer owns the client it builds and closes it on ``stop()``.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from kitsd.core.errors import MisuseError
from kitsd.core.redact import shown_parameter, shown_url
from kitsd.sd.consul.client import connect
from kitsd.sd.consul.instancer import ConsulInstancer
from kitsd.sd.instancer import DEFAULT_FIRST_ANSWER_TIMEOUT

__all__ = ["SCHEMES", "TOKEN_ENV", "ConsulURL", "instancer_from_url", "parse_url", "shown_url"]

TOKEN_ENV = ("KITSD_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN")
"""Environment variables read, in order, for the ACL token."""

SCHEMES = {"consul": ("http", 8500), "consuls": ("https", 8501)}
"""URL scheme -> (HTTP scheme, default port)."""

_KNOWN = {"tag", "passing", "dc"}
_TLS = {"ca", "cert", "key"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class ConsulURL:
    """The settings a ``consul://``/``consuls://`` URL carries (the token is never one)."""

    address: str
    service: str
    tags: tuple[str, ...] = ()
    passing_only: bool = True
    dc: str | None = None
    scheme: str = "http"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def _one(query: dict[str, list[str]], name: str, shown: str) -> str | None:
    values = query.get(name, [])
    if len(values) > 1 or any(not value.strip() for value in values):
        raise MisuseError(f"{name} must be given at most once, not empty, in {shown}")
    return values[0] if values else None


def parse_url(parsed: urllib.parse.SplitResult) -> ConsulURL:
    """The settings in a ``consul://`` or ``consuls://`` URL, checked.

    Raises :class:`kitsd.core.errors.MisuseError` (a ``ValueError``) saying what is
    wrong, never echoing a credential (see :func:`shown_url`).
    """
    shown = shown_url(parsed)
    scheme_port = SCHEMES.get(parsed.scheme.lower())
    if scheme_port is None:
        raise MisuseError(f"not a consul:// or consuls:// URL: {shown}")
    http_scheme, default_port = scheme_port
    if "@" in parsed.netloc:
        raise MisuseError(
            f"credentials do not belong in a {parsed.scheme}:// URL ({shown}): set "
            f"{TOKEN_ENV[0]} instead"
        )
    if parsed.fragment:
        raise MisuseError(f"a {parsed.scheme}:// URL has no #fragment: {shown}")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is None:
        port = default_port
    if not 1 <= port <= 65535:
        raw_port = parsed.netloc.rpartition("]")[2].rpartition(":")[2]
        netloc = parsed.netloc.rpartition(":")[0] if ":" in parsed.netloc else parsed.netloc
        if raw_port.isdigit():  # anything else may be a secret typed in the wrong place
            netloc = f"{netloc}:{raw_port}"
        raise MisuseError(f"bad port in {parsed.scheme}://{netloc}{parsed.path}: the "
                          "agent's port must be in 1-65535")
    host = parsed.hostname or "127.0.0.1"
    service = urllib.parse.unquote(parsed.path.strip("/"))
    if not service or "/" in service:
        raise MisuseError(f"a {parsed.scheme}:// URL names one service as its path, as "
                          f"{parsed.scheme}://127.0.0.1:{default_port}/web: {shown}")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted({shown_parameter(name) for name in set(query) - _KNOWN - _TLS})
    if unknown:
        hint = f"; the ACL token comes from {TOKEN_ENV[0]}" if "token" in unknown else ""
        raise MisuseError(f"unknown {parsed.scheme}:// URL parameter(s) {unknown} in {shown}"
                          f" (known: {sorted(_KNOWN | _TLS)}{hint})")
    tls_given = sorted(set(query) & _TLS)
    if tls_given and http_scheme != "https":
        raise MisuseError(f"{tls_given} need TLS: use consuls:// instead of consul:// ({shown})")
    tags = query.get("tag", [])
    if any(not tag.strip() for tag in tags):
        raise MisuseError(f"empty tag in {shown}")
    passing_values = query.get("passing", ["1"])
    passing_text = passing_values[-1].strip().lower()
    if len(passing_values) > 1 or passing_text not in _TRUE | _FALSE:
        raise MisuseError(f"passing must be given once, as 1 or 0, in {shown}")
    cert, key = _one(query, "cert", shown), _one(query, "key", shown)
    if key is not None and cert is None:
        raise MisuseError(f"key needs cert (the client certificate) in {shown}")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ConsulURL(
        address=address,
        service=service,
        tags=tuple(tags),
        passing_only=passing_text in _TRUE,
        dc=_one(query, "dc", shown),
        scheme=http_scheme,
        ca=_one(query, "ca", shown),
        cert=cert,
        key=key,
    )


def _token() -> str | None:
    for name in TOKEN_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def instancer_from_url(
    parsed: urllib.parse.SplitResult, *,
    first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
) -> ConsulInstancer:
    """A :class:`ConsulInstancer` for a parsed ``consul://``/``consuls://`` URL (see
    the module docstring); ``first_answer_timeout`` as for :class:`ConsulInstancer`.

    Raises :class:`kitsd.core.errors.MisuseError` for a URL it cannot use (including CA
    or certificate files that cannot be loaded).  Agent failures do not raise:
    they arrive as error events.
    """
    settings = parse_url(parsed)
    cert: str | tuple[str, str] | None = settings.cert
    if settings.cert is not None and settings.key is not None:
        cert = (settings.cert, settings.key)
    client = connect(settings.address, token=_token(), dc=settings.dc, scheme=settings.scheme,
                     verify=settings.ca if settings.ca is not None else True, cert=cert)
    try:
        return ConsulInstancer(
            client,
            settings.service,
            tags=settings.tags,
            passing_only=settings.passing_only,
            first_answer_timeout=first_answer_timeout,
            owns_client=True,
        )
    except BaseException:
        client.close()
        raise
