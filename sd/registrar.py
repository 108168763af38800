"""The :class:`Registrar` protocol (go-kit's ``sd.Registrar``)."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

__all__ = ["Registrar", "RegistrarContext"]


@runtime_checkable
class Registrar(Protocol):
    """Registers one instance with a registry.

    ``register()`` and ``deregister()`` are idempotent.  As a context manager it
    registers on enter and deregisters on exit.
    """

    def register(self) -> None: ...

    def deregister(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class RegistrarContext:
    """Mixin giving a registrar its context-manager behaviour."""

    def register(self) -> None:
        raise NotImplementedError

    def deregister(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deregister()
