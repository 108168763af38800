"""Composing middlewares (go-kit's ``endpoint.Chain``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from kitsd.core.errors import shown_value

__all__ = ["chain"]

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
F = TypeVar("F")


# Typed up to four middlewares: the endpoint types flow from the innermost to the
# outermost (a typed endpoint stays typed through typed middlewares).
@overload
def chain(outer: Callable[[A], B], /) -> Callable[[A], B]: ...


@overload
def chain(outer: Callable[[B], C], second: Callable[[A], B], /) -> Callable[[A], C]: ...


@overload
def chain(
    outer: Callable[[C], D], second: Callable[[B], C], third: Callable[[A], B], /
) -> Callable[[A], D]: ...


@overload
def chain(
    outer: Callable[[D], F], second: Callable[[C], D], third: Callable[[B], C],
    fourth: Callable[[A], B], /,
) -> Callable[[A], F]: ...


@overload
def chain(
    outer: Callable[[Any], Any], /, *others: Callable[[Any], Any]
) -> Callable[[Any], Any]: ...


def chain(outer: Callable[[Any], Any], /, *others: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Compose middlewares; the first is the outermost, as go-kit's ``endpoint.Chain``.

    ``chain(a, b, c)(e)`` is ``a(b(c(e)))``.  Raises ``TypeError`` at once, naming
    the position, when an argument is not callable (``chain(None)``).  The
    endpoint's types carry through typed middlewares (up to four are typed).
    """
    for position, middleware in enumerate((outer, *others), start=1):
        if not callable(middleware):
            raise TypeError(
                f"chain() argument {position} must be a middleware (a callable taking an "
                f"endpoint and returning one), got {shown_value(middleware)}"
            )

    def composed(endpoint: Any) -> Any:
        for middleware in reversed(others):
            endpoint = middleware(endpoint)
        return outer(endpoint)

    return composed
