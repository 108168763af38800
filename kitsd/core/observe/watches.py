"""What registry watches are called in observations: :class:`WatchLabel`.

A registry watch labels its observations (:class:`DiscoveryUpdated` …) with the
service it watches.  When that name came from somewhere untrusted -- a request's
host, through ``kitsd.Transport``'s URL templates -- the one who starts the watch
decides its label first: a watch started inside ``with labelling_watches(label):``
reads ``label.name`` at each observation instead, so the label is decided
before the watch's first answer, and :meth:`WatchLabel.rename` moves it (once the
name is vouched for, say) with the current state re-announced under the new name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["WatchLabel", "current_watch_label", "labelling_watches"]


class WatchLabel:
    """The label of the watches started under it (see the module docstring).
    Thread-safe."""

    __slots__ = ("_listeners", "_lock", "name")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a watch label is a str, got {type(name).__name__}")
        self.name = name
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def attach(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each :meth:`rename` (a watch re-announcing its state)."""
        with self._lock:
            self._listeners.append(listener)

    def rename(self, name: str) -> None:
        """Label the watches ``name`` from now on; each re-announces its current state."""
        with self._lock:
            if name == self.name:
                return
            self.name = name
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def __repr__(self) -> str:
        return f"WatchLabel({self.name!r})"


_label: ContextVar[WatchLabel | None] = ContextVar("kitsd_watch_label", default=None)


def current_watch_label() -> WatchLabel | None:
    """The label watches started now take (``None``: their own service name)."""
    return _label.get()


@contextmanager
def labelling_watches(label: WatchLabel) -> Iterator[WatchLabel]:
    """Watches started (broadcasters made) inside the block are labelled ``label``."""
    token = _label.set(label)
    try:
        yield label
    finally:
        _label.reset(token)
