"""Tests for kitsd.core.middleware.chain: the first middleware is the outermost."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd.core.endpoint import Endpoint, Middleware, is_async
from kitsd.core.middleware import chain


def recording(name: str, log: list[str]) -> Middleware:
    """A middleware that records entering and leaving, for sync and async endpoints."""

    def middleware(next_endpoint: Endpoint) -> Endpoint:
        if is_async(next_endpoint):

            async def async_wrapped(request: Any) -> Any:
                log.append(f"{name} in")
                response = await next_endpoint(request)
                log.append(f"{name} out")
                return response

            return async_wrapped

        def wrapped(request: Any) -> Any:
            log.append(f"{name} in")
            response = next_endpoint(request)
            log.append(f"{name} out")
            return response

        return wrapped

    return middleware


def expected_log(names: list[str]) -> list[str]:
    return [f"{n} in" for n in names] + ["endpoint"] + [f"{n} out" for n in reversed(names)]


@pytest.mark.parametrize("names", [["a"], ["a", "b"], ["first", "second", "third", "fourth"]])
def test_first_middleware_is_outermost_sync(names: list[str]) -> None:
    log: list[str] = []

    def endpoint(request: Any) -> Any:
        log.append("endpoint")
        return ("response", request)

    wrapped = chain(*[recording(name, log) for name in names])(endpoint)
    assert not is_async(wrapped)
    assert wrapped("req") == ("response", "req")
    assert log == expected_log(names)


@pytest.mark.parametrize("names", [["a"], ["a", "b"], ["first", "second", "third", "fourth"]])
async def test_first_middleware_is_outermost_async(names: list[str]) -> None:
    log: list[str] = []

    async def endpoint(request: Any) -> Any:
        log.append("endpoint")
        return ("response", request)

    wrapped = chain(*[recording(name, log) for name in names])(endpoint)
    assert is_async(wrapped)
    assert await wrapped("req") == ("response", "req")
    assert log == expected_log(names)


def test_chain_equals_nested_application() -> None:
    applied: list[str] = []

    def tagging(name: str) -> Middleware:
        def middleware(next_endpoint: Endpoint) -> Endpoint:
            applied.append(name)
            return lambda request: f"{name}({next_endpoint(request)})"

        return middleware

    a, b, c = tagging("a"), tagging("b"), tagging("c")
    chained = chain(a, b, c)(lambda request: request)
    nested = a(b(c(lambda request: request)))
    assert chained("x") == nested("x") == "a(b(c(x)))"
    # Middlewares are applied innermost first, as go-kit's endpoint.Chain.
    assert applied == ["c", "b", "a", "c", "b", "a"]


def test_chain_is_reusable() -> None:
    log: list[str] = []
    middleware = chain(recording("a", log), recording("b", log))
    first = middleware(lambda request: request + 1)
    second = middleware(lambda request: request * 10)
    assert first(1) == 2
    assert second(2) == 20
    assert log == ["a in", "b in", "b out", "a out"] * 2


def test_errors_pass_through_the_chain() -> None:
    log: list[str] = []

    def failing(request: Any) -> Any:
        raise LookupError(request)

    wrapped = chain(recording("a", log), recording("b", log))(failing)
    with pytest.raises(LookupError, match="req"):
        wrapped("req")
    assert log == ["a in", "b in"]


@pytest.mark.parametrize(
    ("arguments", "position"),
    [((None,), 1), ((5,), 1), ((lambda e: e, None), 2), ((lambda e: e, lambda e: e, "x"), 3)],
)
def test_chain_rejects_what_is_not_a_middleware_at_once(
    arguments: tuple[Any, ...], position: int
) -> None:
    # Issue 7.9: chain(None) failed only later, when the chain was applied.
    with pytest.raises(TypeError, match=f"argument {position} must be a middleware"):
        chain(*arguments)
