"""The value a key/value registry (etcd, ZooKeeper) stores for one instance.

Pure: no I/O.  Two forms are read, and written by the registrars:

* plain: ``host:port`` -- the instance, with default metadata (go-kit's form);
* JSON: ``{"address": "host:port", "weight": 3, "tags": ["a"], "meta": {"k": "v"}}``
  -- the instance and its :class:`~sd.InstanceInfo`.  Only ``address`` is
  required; other fields are ignored (room for later ones).  A value is read as
  JSON when its first non-blank character is ``{``.

A value that is neither (bad JSON, a missing or invalid address, a weight that is
not an int >= 0, tags that are not strings, meta that is not string -> string) is
refused with a :class:`BadValue` saying why, so the watch can skip it with a
warning, as it skips a bad plain value.
"""

from __future__ import annotations

import json
from typing import Any

from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo

__all__ = ["BadValue", "decode_value", "encode_value"]


class BadValue(MisuseError):
    """A registry value that is not an instance in either form; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_value(text: str) -> tuple[str, InstanceInfo]:
    """The normalised instance and its metadata stored in ``text``.

    Raises :class:`BadValue` (with a short ``reason``) for anything else.
    """
    if not text.lstrip().startswith("{"):
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
