"""``dnssrv://`` URLs for :func:`sd.url.instancer_from_url`.

Form: ``dnssrv://NAME[?server=IP[:PORT]][&resolve=1|0][&tcp=1|0][&min_ttl=S][&max_ttl=S]
[&interval=S][&timeout=S]``

* ``NAME``: the SRV name, as ``_users._tcp.service.consul``;
* ``server``: the name server (an IP address, port 53 by default; Consul's DNS
  interface is ``127.0.0.1:8600``); without it, the system's resolvers;
* ``resolve``: ``1`` (default) for ``address:port`` instances, ``0`` to keep
  the target names;
* ``tcp``: ``1`` (default) to ask over TCP (complete answers: Consul sends at
  most 3 records over UDP), ``0`` for UDP with TCP fallback on truncation;
* ``min_ttl``/``max_ttl``/``interval``/``timeout``: seconds, as
  :class:`sd.dns.SRVInstancer` takes them.

DNS carries no credentials: a URL with a ``user@`` part is refused (without
echoing it).
"""

from __future__ import annotations

import urllib.parse

from kitsd.core.errors import MisuseError
from kitsd.core.redact import shown_parameter, shown_url, without_value
from kitsd.sd.dns.instancer import SRVInstancer
from kitsd.sd.dns.resolver import parse_server
from kitsd.sd.instancer import DEFAULT_FIRST_ANSWER_TIMEOUT

__all__ = ["instancer_from_url"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECONDS = ("min_ttl", "max_ttl", "interval", "timeout")
_KNOWN = {"server", "resolve", "tcp", *_SECONDS}


def instancer_from_url(
    parsed: urllib.parse.SplitResult, *,
    first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
) -> SRVInstancer:
    """An :class:`~sd.dns.SRVInstancer` for a ``dnssrv://`` URL (see the module docstring;
    ``first_answer_timeout`` as for the instancer).

    Raises :class:`~kitsd.core.errors.MisuseError` for a URL it cannot use.  Lookup
    failures do not raise: they arrive as error events.
    """
    shown = shown_url(parsed)
    if "@" in parsed.netloc:
        raise MisuseError(f"a dnssrv:// URL carries no credentials: {shown}")
    name = urllib.parse.unquote(parsed.netloc)
    if not name or ":" in name or parsed.path not in ("", "/"):
        raise MisuseError(f"a dnssrv:// URL names one SRV name, as "
                          f"dnssrv://_users._tcp.service.consul?server=127.0.0.1:8600: {shown}")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted({shown_parameter(name) for name in set(query) - _KNOWN})
    if unknown:
        raise MisuseError(f"unknown dnssrv:// URL parameter(s) {unknown} in {shown}"
                          f" (known: {sorted(_KNOWN)})")
    once = {}
    for key, values in query.items():
        if len(values) != 1 or not values[0].strip():
            raise MisuseError(f"{key} must be given once, not empty, in {shown}")
        once[key] = values[0].strip()
    resolve_text = once.get("resolve", "1").lower()
    if resolve_text not in _TRUE | _FALSE:
        raise MisuseError(f"resolve must be 1 or 0 in {shown}")
    tcp_text = once.get("tcp", "1").lower()
    if tcp_text not in _TRUE | _FALSE:
        raise MisuseError(f"tcp must be 1 or 0 in {shown}")
    # Parameter values are never echoed (kitsd.core.redact): messages name the rule.
    seconds: dict[str, float] = {}
    for key in _SECONDS:
        if key in once:
            try:
                seconds[key] = float(once[key])
            except ValueError:
                raise MisuseError(f"{key} must be seconds, in {shown}") from None
    server = once.get("server")
    try:
        if server is not None:
            parse_server(server)
    except MisuseError:
        raise MisuseError(f"server must be an IP address with an optional port, as "
                          f"127.0.0.1:8600, in {shown}") from None
    except ImportError as error:
        raise MisuseError(f"dnssrv:// needs the dns driver: {error}") from error
    try:
        return SRVInstancer(name, resolver=server, resolve=resolve_text in _TRUE,
                            tcp=tcp_text in _TRUE, first_answer_timeout=first_answer_timeout,
                            **seconds)
    except ImportError as error:
        raise MisuseError(f"dnssrv:// needs the dns driver: {error}") from error
    except MisuseError as error:  # URL parameter values are never echoed
        raise MisuseError(f"{without_value(error)} in {shown}") from None
