"""The ZooKeeper children view: which instances the children of a node hold.

Pure: no I/O, no threads, no clock.  The watcher in :mod:`sd.zk.instancer`
tells it what ZooKeeper said and asks it what to read next.

Theory of operation
-------------------
A service is a ZooKeeper node (``/services/users``); each instance is one
child node whose *data* is the instance string (``10.0.0.1:8080``), as
go-kit's ``sd/zk`` stores them, or the JSON form with metadata
(``{"address": "10.0.0.1:8080", "weight": 3, "tags": [...], "meta": {...}}``,
:mod:`sd.instance_value`, as etcd values), read as the instance's
:class:`~sd.InstanceInfo`.  ZooKeeper watches are one-shot and are lost
with the connection (kazoo fires and drops every watcher when its connection
breaks), so the view tracks what must be re-read rather than trusting that a
watch is in place:

                      apply_children(names)            apply_data(name, data)
      NEED_LIST ───────────────────────────▶ names to read ─────────────▶ (in sync)
          ▲                                        ▲                         │
          │ reset()  (connection lost,             │ data_changed(name)      │
          │  session expired, path created)        └─────────────────────────┘
          └──────────────────────────────────────────────────────────────────┘

* ``reset()`` -- the watches may be gone: the next sync lists the children
  again *and* re-reads every child's data (setting fresh watches on all).
  The start state.
* ``children_changed()`` -- the children watch fired: list again, read only
  the children that are new (the others still have their data watches).
* ``data_changed(name)`` -- a child's data watch fired: re-read that child.
* ``apply_children(names)`` returns which children's data to read now;
  children that are gone are forgotten at once.
* ``apply_data(name, None)`` -- the child vanished between the listing and the
  read: forgotten (the children watch will report it too).

A child whose data is not an instance (not UTF-8, no port, a megabyte of junk)
is logged once per value, truncated, and counts as "no instance here"; it never
stops the watch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import InstanceInfo
from kitsd.sd.instance_value import BadValue, decode_value
from kitsd.sd.instance_value import shown as shown_value

__all__ = [
    "ChildrenView",
    "brief",
    "check_instance",
    "check_path",
    "child_path",
    "decode_entry",
    "decode_instance",
    "shown",
]

logger = logging.getLogger(__name__)

_SHOWN = 64  # bytes of a bad value quoted in a warning
_LONGEST_INSTANCE = 300  # a 253-character host name, brackets, colon and port fit
_LONGEST_JSON = 65_536  # the JSON form with metadata: room for tags and meta, not for junk


def brief(text: str, limit: int = 160) -> str:
    """``text`` cut to ``limit`` characters (with ``...``), for error messages."""
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value: bytes | str) -> str:
    """``repr`` of at most the first 64 characters of ``value``, and its full length if cut:
    registry junk must not turn into megabyte log lines."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} bytes)"


def decode_entry(
    name: str, data: bytes | None, *, source: str = "zookeeper"
) -> tuple[str, InstanceInfo] | None:
    """The normalised instance and metadata stored in ``data`` -- plain ``host:port`` or
    the JSON form of :mod:`sd.instance_value` -- or ``None`` (with a truncated warning).

    Never raises: one bad child must not hide the good ones.
    """
    if data is None:
        logger.warning("skipping %s child %r: no data", source, name)
        return None
    is_json = data.lstrip().startswith(b"{")
    if len(data) > (_LONGEST_JSON if is_json else _LONGEST_INSTANCE):
        logger.warning("skipping %s child %r: value %s is too long", source, name, shown(data))
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        logger.warning("skipping %s child %r: value %s is not UTF-8", source, name, shown(data))
        return None
    if not is_json and _has_control(text.strip()):
        # a newline inside would forge log lines and slip past a trailing-$ check
        # (JSON may have newlines between tokens; its strings cannot hold raw ones)
        logger.warning("skipping %s child %r: value %s has control characters", source, name,
                       shown(text))
        return None
    try:
        return decode_value(text)
    except BadValue as error:
        logger.warning("skipping %s child %r: value %s: %s", source, name,
                       shown(shown_value(text)), brief(error.reason))
        return None


def decode_instance(name: str, data: bytes | None, *, source: str = "zookeeper") -> str | None:
    """The normalised instance stored in ``data`` (either form), or ``None`` (with a
    warning) if it is not one.  Never raises."""
    entry = decode_entry(name, data, source=source)
    return None if entry is None else entry[0]


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or char == "\x7f" for char in text)


def check_instance(value: object) -> str:
    """The normalised instance string of ``value``; raises
    :class:`~kitsd.core.errors.InvalidInstanceError` naming it (control characters included:
    a newline inside an instance would forge log lines)."""
    if isinstance(value, str) and _has_control(value.strip()):
        raise InvalidInstanceError(shown(value), "control characters")
    return normalize_instance(value)


def check_path(path: object, *, what: str = "path") -> str:
    """``path`` if it is an absolute ZooKeeper node path (``/a/b``), without a trailing ``/``.

    Raises ``TypeError`` for a non-string and :class:`~kitsd.core.errors.MisuseError`
    (a ``ValueError``) naming ``what`` for an empty, relative or malformed path.
    """
    if not isinstance(path, str):
        raise TypeError(f"ZooKeeper {what} must be a string, not {type(path).__name__}")
    trimmed = path.rstrip("/") if path != "/" else path
    if (
        not trimmed.startswith("/")
        or trimmed == "/"
        or "//" in trimmed
        or any(part in {".", ".."} for part in trimmed.split("/")[1:])
        or any(ord(char) < 0x20 or char == "\x7f" for char in trimmed)
    ):
        raise MisuseError(
            f"ZooKeeper {what} must be an absolute node path below /, as /services/users,"
            f" not {shown(path)}"
        )
    return trimmed


def child_path(path: str, name: str) -> str:
    """The full path of child ``name`` of ``path``."""
    return f"{path}/{name}"


class ChildrenView:
    """Child name → instance map of one ZooKeeper node, plus what to re-read.

    Not thread-safe: owned by one watcher thread.  ``source`` names the node
    in warnings about bad values.
    """

    def __init__(self, *, source: str = "zookeeper") -> None:
        self._source = source
        self._by_name: dict[str, tuple[str, InstanceInfo] | None] = {}
        self._raw: dict[str, bytes | None] = {}  # last data read per child: decode changes only
        self._need_list = True
        self._full = True
        self._stale: set[str] = set()

    @property
    def needs_list(self) -> bool:
        """Whether the children must be listed (with a fresh children watch) next."""
        return self._need_list

    @property
    def stale(self) -> frozenset[str]:
        """Children whose data must be re-read (with a fresh data watch) next."""
        return frozenset(self._stale)

    @property
    def in_sync(self) -> bool:
        """Whether nothing needs reading: every watch fired so far has been followed up."""
        return not self._need_list and not self._stale

    def instances(self) -> tuple[str, ...]:
        """The valid instances among the children, sorted and de-duplicated."""
        return tuple(sorted({entry[0] for entry in self._by_name.values() if entry is not None}))

    def info(self) -> dict[str, InstanceInfo]:
        """The non-default metadata of :meth:`instances`.  An instance held by several
        children shows that of the greatest child name (with sequential nodes, the
        latest registration)."""
        shown: dict[str, InstanceInfo] = {}
        for name in sorted(self._by_name):
            entry = self._by_name[name]
            if entry is not None:
                shown[entry[0]] = entry[1]
        return {instance: info for instance, info in shown.items() if not info.is_default}

    def reset(self) -> None:
        """Every watch may be lost (connection loss, session expiry): re-list and re-read all."""
        self._need_list = True
        self._full = True

    def children_changed(self) -> None:
        """The children watch fired: list again."""
        self._need_list = True

    def data_changed(self, name: str) -> None:
        """The data watch of child ``name`` fired: re-read it (if it is still a child)."""
        if name in self._by_name:
            self._stale.add(name)

    def apply_children(self, names: Iterable[str]) -> list[str]:
        """Record a fresh listing; returns the children whose data to read now, sorted.

        Children no longer listed are forgotten.  After :meth:`reset` every
        child is read; otherwise only new ones and those marked stale.
        """
        listed = set(names)
        for gone in set(self._by_name) - listed:
            del self._by_name[gone]
            self._raw.pop(gone, None)
        to_read = set(listed) if self._full else (listed - set(self._by_name)) | self._stale
        for name in listed:
            self._by_name.setdefault(name, None)
        self._stale = {name for name in to_read if name in listed}
        self._need_list = False
        self._full = False
        return sorted(self._stale)

    def apply_missing_node(self) -> None:
        """The watched node does not exist: no children (a watch on its creation is set)."""
        self._by_name.clear()
        self._raw.clear()
        self._stale.clear()
        self._need_list = False
        self._full = False

    def apply_data(self, name: str, data: bytes | None, *, exists: bool = True) -> None:
        """Record child ``name``'s data (``exists=False``: it vanished before the read)."""
        self._stale.discard(name)
        if not exists:
            self._by_name.pop(name, None)
            self._raw.pop(name, None)
            return
        if name not in self._by_name:
            return
        if name in self._raw and self._raw[name] == data:
            return  # a re-read after a reset: same value, already decoded (and warned about)
        self._raw[name] = data
        self._by_name[name] = decode_entry(name, data, source=self._source)

    def __repr__(self) -> str:
        return (
            f"ChildrenView({self._source!r}, children={len(self._by_name)},"
            f" needs_list={self._need_list}, stale={len(self._stale)})"
        )
