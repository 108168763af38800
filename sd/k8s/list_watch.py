"""List, then watch: resource versions, bookmarks, ``410 Gone`` and paging, and the
API server's refusals mapped into kitsd's error tree.

Pure: no I/O, no threads, no clock.  :mod:`sd.k8s.watch` sends the requests this
module describes and hands it the answers.

Theory of operation
-------------------
Every Kubernetes object carries a ``resourceVersion`` (RV), and so does every
list.  A watch started at RV ``r`` delivers every change after ``r``, in order,
so a list at ``r`` followed by a watch from ``r`` sees every change once; a
watch that ends (its ``timeoutSeconds`` ran out, the connection broke, the API
server restarted) is resumed from the RV of the last event applied.  Watch
*bookmarks* (``allowWatchBookmarks``) are events that carry only a newer RV:
they move our RV forward while nothing of ours changes, so a resume after a
quiet hour does not start from an RV the server has long forgotten.

:class:`ListWatch` is that bookkeeping as a small state machine::

                    list pages (continue tokens), last page
      NEED_LIST ────────────────────────────────────────────▶ WATCHING (rv = the list's RV)
          ▲   ▲ 410 on a continued page:                        │  ADDED / MODIFIED / DELETED /
          │   └─ the list starts over                           │  BOOKMARK: rv = the object's RV
          │                                                     │  stream ended or broke:
          │ 410 Gone ("too old resource version": compacted)    │  watch again from rv
          └─────────────────────────────────────────────────────┘

* ``410 Gone`` -- as an HTTP status or as an ``ERROR`` event in the stream --
  means the server no longer has the history after our RV (etcd compacted it,
  or an API server restarted with a watch cache that starts later).  Only a
  fresh list is correct then: the view is *replaced* by it
  (:meth:`sd.k8s.slices.SliceView.replace`), so every change missed is seen
  as a difference, a slice deleted meanwhile included -- never a missed or a
  duplicated change.  (Watching again without an RV, as some clients do on
  410, replays the objects that exist but never the deletions missed.)
* A 410 with no event applied since the last list would otherwise make a
  list/watch/list loop; :meth:`ListWatch.gone` says when to back off first.
* Any other failure keeps the RV: the watch resumes from it after a backoff.
* Applying an event is idempotent (the view is replaced slice by slice), so a
  resumed watch that repeats an event changes nothing.

Errors
------
:func:`status_error` maps an API server refusal to :mod:`kitsd.core.errors`:
401 and 403 become :class:`~kitsd.core.errors.PermissionDeniedError` naming the
verb and the resource (``cannot watch endpointslices.discovery.k8s.io in
namespace 'shop'``), everything else
:class:`~kitsd.core.errors.RegistryUnavailableError`; 410 is :class:`Expired`,
not an error the user sees.  Messages quote the server's own message, cut to
:data:`MAX_MESSAGE` characters; they never hold a credential (the server's
messages do not, and ours never include a header).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from kitsd.core.errors import BackendError, PermissionDeniedError, RegistryUnavailableError, clip

__all__ = [
    "API_PATH",
    "LIST_PAGE_SIZE",
    "MAX_MESSAGE",
    "MIN_WATCH_TIMEOUT",
    "RESOURCE",
    "SERVICE_LABEL",
    "Expired",
    "ListWatch",
    "Phase",
    "WatchEvent",
    "decode_event",
    "slices_path",
    "status_error",
    "watch_timeout",
]

#: The label that ties an EndpointSlice to its Service.
SERVICE_LABEL: Final = "kubernetes.io/service-name"
#: What the watch reads, as RBAC and error messages name it.
RESOURCE: Final = "endpointslices.discovery.k8s.io"
#: The API group and version read (Kubernetes 1.21 and later serve it).
API_PATH: Final = "/apis/discovery.k8s.io/v1"
#: Slices asked for per list page (a Service of 50,000 endpoints is 500 slices).
LIST_PAGE_SIZE: Final = 500
#: A watch asks the server to end it after MIN_WATCH_TIMEOUT to twice that seconds
#: (as client-go's reflectors do), so that load spreads when servers come and go.
MIN_WATCH_TIMEOUT: Final = 300.0
#: How many characters of a server's message an error quotes.
MAX_MESSAGE: Final = 300


def slices_path(namespace: str) -> str:
    """The URL path of the EndpointSlices of ``namespace``."""
    return f"{API_PATH}/namespaces/{namespace}/endpointslices"


def watch_timeout(rand: float, minimum: float = MIN_WATCH_TIMEOUT) -> int:
    """Seconds a watch asks to last: ``minimum * (1 + rand)``, ``rand`` in ``[0, 1)``,
    at least 1."""
    return max(1, int(minimum * (1.0 + rand)))


class Expired(Exception):
    """The server answered ``410 Gone``: the resource version (or the continue token)
    is too old.  A signal between :mod:`sd.k8s.watch` and :class:`ListWatch`."""


class Phase(enum.Enum):
    """What the watch needs next (see the module docstring)."""

    NEED_LIST = "need-list"
    WATCHING = "watching"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One decoded watch event: its ``kind`` and its ``object`` (a slice, a bookmark
    or a ``Status``)."""

    kind: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
    object: Mapping[str, object]


_KINDS: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


def decode_event(line: bytes | str) -> WatchEvent | None:
    """The event on one line of a watch stream; ``None`` for a blank line.

    Raises ``ValueError`` (saying what is wrong, quoting at most 80 characters) for
    a line that is not a watch event.
    """
    if not line.strip():
        return None
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        shown = line[:80] if isinstance(line, str) else line[:80].decode("utf-8", "replace")
        raise ValueError(f"not a watch event (bad JSON): {shown!r}") from error
    kind = raw.get("type") if isinstance(raw, dict) else None
    obj = raw.get("object") if isinstance(raw, dict) else None
    if kind not in _KINDS or not isinstance(obj, dict):
        raise ValueError(f"not a watch event: type {clip(str(kind), 40)!r}")
    return WatchEvent(kind, obj)


def resource_version(obj: Mapping[str, object]) -> str | None:
    """``metadata.resourceVersion`` of an object or a list, if it has one."""
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        version = metadata.get("resourceVersion")
        if isinstance(version, str) and version:
            return version
    return None


def _continue_token(obj: Mapping[str, object]) -> str | None:
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        token = metadata.get("continue")
        if isinstance(token, str) and token:
            return token
    return None


class ListWatch:
    """Resource-version bookkeeping of one list-then-watch loop (see the module docstring).

    ``selector`` is the label selector sent with every request.  Not thread-safe:
    owned by one watch.
    """

    def __init__(self, selector: str, *, page_size: int = LIST_PAGE_SIZE) -> None:
        self.selector = selector
        self._page_size = page_size
        self._phase = Phase.NEED_LIST
        self._version: str | None = None
        self._continue: str | None = None
        self._pages: list[list[object]] = []
        self._since_list = 0  # events applied since the last list
        self.relists = 0
        """How many times a ``410 Gone`` forced a fresh list (for tests and metrics)."""
        self.bookmarks = 0
        """How many bookmarks moved the resource version (for tests and metrics)."""

    @property
    def phase(self) -> Phase:
        """:attr:`Phase.NEED_LIST` until a full list is in, and again after a 410."""
        return self._phase

    @property
    def needs_list(self) -> bool:
        """Whether the next request is a list page."""
        return self._phase is Phase.NEED_LIST

    @property
    def resource_version(self) -> str | None:
        """The RV the next watch starts from (``None`` before the first list)."""
        return self._version

    # -- listing --------------------------------------------------------------

    def list_params(self) -> dict[str, str]:
        """Query parameters of the next list page."""
        params = {"labelSelector": self.selector, "limit": str(self._page_size)}
        if self._continue is not None:
            params["continue"] = self._continue
        return params

    def page(self, answer: Mapping[str, object]) -> list[object] | None:
        """Take one list page; returns every slice listed once the last page is in (and
        the phase is then WATCHING), else ``None`` (ask for :meth:`list_params` again).

        Raises ``ValueError`` for an answer that is not a list with a resource version.
        """
        items = answer.get("items")
        if items is None:
            items = []  # an empty list may come without items
        if not isinstance(items, list):
            raise ValueError("the EndpointSlice list has no items list")  # noqa: TRY004 - a bad answer, not a bad argument
        if self._continue is None:
            self._pages = []
            version = resource_version(answer)
            if version is None:
                raise ValueError("the EndpointSlice list has no resourceVersion")
            self._version = version
        self._pages.append(items)
        self._continue = _continue_token(answer)
        if self._continue is not None:
            return None
        pages, self._pages = self._pages, []
        self._phase = Phase.WATCHING
        self._since_list = 0
        return [item for page in pages for item in page]

    def page_expired(self) -> None:
        """A continued page answered 410 (the continue token expired): start over."""
        self._continue = None
        self._pages = []

    # -- watching -------------------------------------------------------------

    def watch_params(self, timeout_seconds: int) -> dict[str, str]:
        """Query parameters of the next watch.  Raises ``RuntimeError`` before a list."""
        if self._phase is Phase.NEED_LIST or self._version is None:
            raise RuntimeError("the slices must be listed before watching")
        return {
            "labelSelector": self.selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._version,
            "timeoutSeconds": str(timeout_seconds),
        }

    def observe(self, event: WatchEvent) -> bool:
        """Move the RV past ``event``; ``True`` if the view should apply it (an
        ``ADDED``/``MODIFIED``/``DELETED``).  Raises :class:`Expired` for a 410
        ``ERROR`` event and the mapped error (:func:`status_error`) for another."""
        if event.kind == "ERROR":
            code = event.object.get("code")
            if code == 410:
                raise Expired(_message(event.object) or "resource version too old")
            raise status_error(code if isinstance(code, int) else 500, event.object,
                               verb="watch", what=RESOURCE, where="")
        version = resource_version(event.object)
        if version is not None:
            self._version = version
        if event.kind == "BOOKMARK":
            self.bookmarks += 1
            return False
        self._since_list += 1
        return True

    def gone(self) -> bool:
        """The watch answered 410: list again.  Returns whether to back off first (no
        event was applied since the last list, so listing at once could loop)."""
        self._phase = Phase.NEED_LIST
        self._continue = None
        self._pages = []
        self.relists += 1
        return self._since_list == 0

    def __repr__(self) -> str:
        return (f"ListWatch({self.selector!r}, phase={self._phase.value}, "
                f"rv={self._version!r}, relists={self.relists})")


def _message(status: Mapping[str, object] | str | None) -> str:
    if isinstance(status, Mapping):
        message = status.get("message")
        return clip(message.strip(), MAX_MESSAGE) if isinstance(message, str) else ""
    if isinstance(status, str):
        return clip(status.strip(), MAX_MESSAGE)
    return ""


def status_error(
    code: int, status: Mapping[str, object] | str | None, *, verb: str, what: str, where: str
) -> BackendError:
    """The kitsd error for an API server answer with HTTP status ``code``.

    ``status``: the answer's ``Status`` object (or its text); ``verb`` and ``what``:
    what we asked (``"watch"``, ``"endpointslices.discovery.k8s.io in namespace
    'shop'"``); ``where``: the server, as a message shows it.
    """
    message = _message(status)
    said = f": {message}" if message else ""
    at = f" at {where}" if where else ""
    if code == 401:
        return PermissionDeniedError(
            f"kube-apiserver{at} rejected our credentials to {verb} {what} "
            f"(401 Unauthorized: an expired or unknown token?){said}")
    if code == 403:
        return PermissionDeniedError(
            f"kube-apiserver{at}: cannot {verb} {what} (403 Forbidden: the token needs "
            f"RBAC permission to {verb} endpointslices in API group discovery.k8s.io){said}")
    if code == 404:
        return RegistryUnavailableError(
            f"kube-apiserver{at} has no {API_PATH} (404: Kubernetes 1.21 or later serves "
            f"EndpointSlices there) while trying to {verb} {what}{said}")
    if code == 429:
        return RegistryUnavailableError(
            f"kube-apiserver{at} is throttling us (429 Too Many Requests) to {verb} {what}{said}")
    return RegistryUnavailableError(f"kube-apiserver{at} failed to {verb} {what} "
                                    f"(HTTP {code}){said}")
