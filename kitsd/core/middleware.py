"""Composing middlewares (go-kit's ``endpoint.Chain``)."""

from __future__ import annotations

from kitsd.core.endpoint import Endpoint, Middleware
from kitsd.core.errors import shown_value

__all__ = ["chain"]


def chain(outer: Middleware, *others: Middleware) -> Middleware:
    """Compose middlewares; the first is the outermost, as go-kit's ``endpoint.Chain``.

    ``chain(a, b, c)(e)`` is ``a(b(c(e)))``.  Raises ``TypeError`` at once, naming
    the position, when an argument is not callable (``chain(None)``).
    """
    for position, middleware in enumerate((outer, *others), start=1):
        if not callable(middleware):
            raise TypeError(
                f"chain() argument {position} must be a middleware (a callable taking an "
                f"endpoint and returning one), got {shown_value(middleware)}"
            )

    def composed(endpoint: Endpoint) -> Endpoint:
        for middleware in reversed(others):
            endpoint = middleware(endpoint)
        return outer(endpoint)

    return composed
