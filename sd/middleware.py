"""Composing middlewares (go-kit's ``endpoint.Chain``)."""

from __future__ import annotations

from sd.endpoint import Endpoint, Middleware

__all__ = ["chain"]


def chain(outer: Middleware, *others: Middleware) -> Middleware:
    """Compose middlewares; the first is the outermost, as go-kit's ``endpoint.Chain``.

    ``chain(a, b, c)(e)`` is ``a(b(c(e)))``.
    """

    def composed(endpoint: Endpoint) -> Endpoint:
        for middleware in reversed(others):
            endpoint = middleware(endpoint)
        return outer(endpoint)

    return composed
