"""The value a key/value registry (etcd, ZooKeeper) stores for one instance.

Pure: no I/O.  Three forms are read; the registrars write the first two:

* plain: ``host:port`` -- the instance, with default metadata (go-kit's
  ``sd/zk`` and ``sd/etcdv3`` registrars write what they are given, usually this);
* JSON: ``{"address": "host:port", "weight": 3, "tags": ["a"], "meta": {"k": "v"}}``
  -- the instance and its :class:`~sd.InstanceInfo`.  Only ``address`` is
  required; other fields are ignored (room for later ones).  A value is read as
  JSON when its first non-blank character is ``{``;
* URL: ``scheme://host:port`` or ``scheme://host:port/`` -- the form go-kit's
  etcd ``Service`` documentation suggests (``"http://1.2.3.4:8080"``), so go-kit
  services write it.  The instance is ``host:port``; the scheme is not kept
  (instances are addresses: the caller's factory speaks its protocol).  A URL
  with user information, a path, a query or a fragment, or without a port, is
  refused, saying which.

A value that is none of these (bad JSON, a missing or invalid address, a weight
that is not an int >= 0, tags that are not strings, meta that is not string ->
string) is refused with a :class:`BadValue` saying why, so the watch can skip it
with a warning; :func:`shown` is the value as that warning may show it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import redact_address, redact_url
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo

__all__ = ["BadValue", "decode_value", "encode_value", "shown"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class BadValue(MisuseError):
    """A registry value that is not an instance in either form; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_value(text: str) -> tuple[str, InstanceInfo]:
    """The normalised instance and its metadata stored in ``text``.

    Raises :class:`BadValue` (with a short ``reason``) for anything else.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        if "://" in stripped:
            return _from_url(stripped), DEFAULT_INFO
        try:
            return normalize_instance(text), DEFAULT_INFO
        except InvalidInstanceError as error:
            raise BadValue(f"invalid instance: {error.reason}") from error
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise BadValue(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise BadValue("not a JSON object")
    address = document.get("address")
    if not isinstance(address, str):
        raise BadValue('"address" (a "host:port" string) is missing')
    try:
        instance = normalize_instance(address)
    except InvalidInstanceError as error:
        raise BadValue(f'"address" is not an instance: {error.reason}') from error
    return instance, _info(document)


def _from_url(text: str) -> str:
    """The instance in a ``scheme://host:port[/]`` value; :class:`BadValue` saying what
    else the URL carries, never showing user information."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        # urlsplit would drop a tab or a newline and read "ev\nil.com" as "evil.com"
        raise BadValue("a URL value with control characters")
    scheme = text.partition("://")[0]
    if _SCHEME.fullmatch(scheme) is None:
        raise BadValue("not an instance: host:port, a JSON object, or a URL"
                       " scheme://host:port (as http://10.0.0.1:8080)")
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError:
        raise BadValue("a URL value that cannot be parsed (want scheme://host:port)") \
            from None
    if "@" in parsed.netloc:
        raise BadValue("a URL value with user information ('user:password@'): want"
                       " scheme://host:port")
    for part, what in ((parsed.path not in ("", "/"), "a path"), (parsed.query, "a query"),
                       (parsed.fragment, "a fragment")):
        if part:
            raise BadValue(f"a URL value with {what}: an instance is scheme://host:port[/]"
                           " (the registry stores addresses, not endpoints)")
    try:
        return normalize_instance(parsed.netloc)
    except InvalidInstanceError as error:
        if error.reason == "no port":
            raise BadValue(f"a URL value without a port: want {scheme}://host:port (the"
                           " default port of a scheme is not assumed)") from None
        raise BadValue(f"a URL value whose host:port is invalid: {error.reason}") from None


def shown(text: str) -> str:
    """``text`` as a warning may show it: by :mod:`kitsd.core.redact`'s rule (user
    information and a port that is not a number are ``***``, a URL's query and
    fragment too), so a credential stored in a registry value is not logged."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return text
    return redact_url(stripped) if "://" in stripped else redact_address(text)


def _info(document: dict[str, Any]) -> InstanceInfo:
    weight = document.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise BadValue(f'"weight" must be an int >= 0, got {json.dumps(weight)[:40]}')
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise BadValue('"tags" must be a list of strings')
    meta = document.get("meta", {})
    if not isinstance(meta, dict) or not all(isinstance(value, str) for value in meta.values()):
        raise BadValue('"meta" must be an object of strings')
    if weight == 1 and not tags and not meta:
        return DEFAULT_INFO
    return InstanceInfo(weight, tuple(tags), meta)


def encode_value(instance: str, info: InstanceInfo | None = None) -> str:
    """The value to store for ``instance`` (already normalised): plain ``host:port``
    when ``info`` is ``None``, else the JSON form (default fields left out)."""
    if info is None:
        return instance
    document: dict[str, Any] = {"address": instance}
    if info.weight != 1:
        document["weight"] = info.weight
    if info.tags:
        document["tags"] = list(info.tags)
    if info.meta:
        document["meta"] = dict(info.meta)
    return json.dumps(document, separators=(",", ":"), sort_keys=True)
