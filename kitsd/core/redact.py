"""The one redaction rule for everything kitsd shows: error messages, logs, ``repr``.

A secret typed into an address or a URL must never come back in a message, a
log line or a traceback.  Wherever kitsd shows an address or a URL a user gave,
it goes through here, and the rule is:

* **user information** -- everything before the last ``@`` of an address or of
  a URL's authority (``user:password@``) -- becomes ``***@``;
* a **port that is not a number** (``host:S3CRET``: a password typed where the
  port goes, as in ``etcd://user:S3CRET/prefix/`` with the host forgotten)
  becomes ``***``; a numeric port is shown;
* every **query parameter value** and the **fragment** of a URL become ``***``,
  and a parameter *name* that is not a plain word too;
* what remains is cut to a bounded length (:func:`kitsd.core.errors.clip`).

Messages about a URL's parameters name the parameter and what it must be,
never the value that was given.  Host names and paths are shown: they are what
a person needs to find the mistake.

Pure functions of their argument: no I/O.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = [
    "redact_address",
    "redact_netloc",
    "redact_url",
    "shown_address",
    "shown_parameter",
    "shown_url",
    "without_value",
]

_LIMIT = 200
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z_-]{0,19}")
_PORT = re.compile(r"[0-9]{1,5}")


def _clip(text: str, limit: int) -> str:
    # kitsd.core.errors.clip, without importing it (errors imports this module)
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


def redact_address(text: str) -> str:
    """One address ``[user@]host[:port]`` by the rule above (not cut, not quoted)."""
    return _host_port(text)


def _host_port(text: str) -> str:
    """One ``[user@]host[:port]`` with the rule applied."""
    _, at, rest = text.rpartition("@")
    prefix = "***@" if at else ""
    if rest.startswith("["):
        close = rest.find("]")
        host, tail = (rest[: close + 1], rest[close + 1 :]) if close >= 0 else (rest, "")
        if tail and not tail.startswith(":"):
            tail = ":***"
    elif ":" in rest:
        host, _, port = rest.rpartition(":")
        tail = f":{port}"
    else:
        host, tail = rest, ""
    port = tail[1:]
    if port and _PORT.fullmatch(port) is None:
        tail = ":***"
    return f"{prefix}{host}{tail}"


def redact_netloc(netloc: str) -> str:
    """A URL authority (``[user:password@]host[:port][,host[:port]...]``) fit for a
    message: user information and non-numeric ports replaced by ``***``."""
    _, at, hosts = netloc.rpartition("@")
    shown = ",".join(_host_port(item) for item in hosts.split(","))
    return f"***@{shown}" if at else shown


def shown_address(value: object) -> str:
    """``repr`` of an address (``host:port``, maybe with user information) fit for a
    message: user information and a non-numeric port replaced by ``***``, cut to 100
    characters.  Anything that is not a string shows as its type."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    return repr(_clip(_host_port(value), 100))


def shown_parameter(name: str) -> str:
    """A query parameter name fit for a message: a plain word, else ``***`` (it may
    be a secret pasted where a name goes)."""
    return name if _PLAIN_NAME.fullmatch(name) else "***"


def redact_url(url: str) -> str:
    """``url`` fit for error messages and logs, by the rule above; works on URLs too
    broken to parse (user information is everything before the last ``@``, so a
    password holding ``/``, ``?`` or ``#`` does not leak either)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = "@" in rest
    rest = rest.rpartition("@")[2]  # first: a password may hold '/', '?' or '#'
    rest, hash_sign, _ = rest.partition("#")
    base, question, query = rest.partition("?")
    netloc, slash, path = base.partition("/")
    base = f"{'***@' if at else ''}{redact_netloc(netloc)}{slash}{path}"
    if question:  # each value, and each name that is not a plain word, by the rule
        query = "".join(
            part if part in "&;" else
            f"{shown_parameter(name) if name else ''}{'=***' if equals else ''}"
            for part in re.split("([&;])", query)
            for name, equals, _ in (part.partition("="),))
    shown = f"{scheme}{sep}{base}{question}{query}{'#***' if hash_sign else ''}"
    return _clip(shown, _LIMIT)


def shown_url(parsed: urllib.parse.SplitResult) -> str:
    """A parsed URL fit for a message, by the rule above.  Drivers' URL errors use it."""
    pairs = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    query = "&".join(f"{shown_parameter(name)}={'***' if value else ''}" for name, value in pairs)
    if not pairs and parsed.query:
        query = "***"
    # not urlunsplit: it drops the "//" of an empty authority (consul:// became "consul:")
    shown = f"{parsed.scheme}://{redact_netloc(parsed.netloc)}{parsed.path}"
    if parsed.query:
        shown += f"?{query}"
    if parsed.fragment:
        shown += "#***"
    return _clip(shown, _LIMIT)


def without_value(error: BaseException) -> str:
    """The message of a :mod:`kitsd.core.validate` error without the value it quotes
    (its messages end ``..., not <value>``), for a value that may be a secret: one
    typed where a port goes, a URL parameter's."""
    text = str(error)
    head, sep, _ = text.rpartition(", not ")
    return head if sep else text
