"""Endpoint sources and endpoints shared by the balancer tests."""

from __future__ import annotations

from typing import Any

from sd.endpoint import Endpoint


class Static:
    """The smallest endpoint source: a fixed list (go-kit's ``FixedEndpointer``)."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)


class Failing:
    """An endpoint source whose ``endpoints()`` raises the given error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def endpoints(self) -> list[Endpoint]:
        raise self.error


def noop(name: str) -> Endpoint:
    """An endpoint that answers its own name."""

    def endpoint(request: Any) -> str:
        return name

    endpoint.__name__ = name
    return endpoint
