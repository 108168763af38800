"""The :class:`Event` a discovery source sends to its subscribers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """A whole snapshot of a service's instances.

    ``instances`` are ``host:port`` strings.  ``error`` set means the source
    could not refresh its view and ``instances`` may be stale: discovery
    failures travel as data, not exceptions (as go-kit's ``sd.Event``).
    """

    instances: tuple[str, ...] = ()
    error: BaseException | None = None

    def same_state(self, other: Event) -> bool:
        """Whether ``other`` describes the same state, so need not be re-sent.

        Two errors are the same when they have the same type and arguments:
        a registry that keeps failing the same way is not news.
        """
        if self.instances != other.instances:
            return False
        if self.error is None or other.error is None:
            return self.error is other.error
        return type(self.error) is type(other.error) and self.error.args == other.error.args
