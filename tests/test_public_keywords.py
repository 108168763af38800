"""A misspelt keyword of a public function taking ``**options: Unpack[...]`` is a
``TypeError`` naming that function, as Python's own would be -- not the internal
helper that first unpacks the options."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import kitsd
from kitsd import auth, lb, sd, serve
from kitsd.core import validate
from kitsd.lb.retry import RetryOptions
from kitsd.sd import thrift


class _Registrar:
    def register(self) -> None:
        """Nothing to register."""

    def deregister(self) -> None:
        """Nothing to deregister."""


def _balancer() -> lb.RoundRobin[Any]:
    registry = sd.MemoryRegistry()
    return lb.RoundRobin(sd.Endpointer(registry.instancer("x"), lambda _: lambda q: q))


#: function name -> (the function, its positional arguments); called as Any, since a
#: misspelt keyword is what mypy would refuse
CASES: dict[str, tuple[Any, Callable[[], tuple[object, ...]]]] = {
    "lb.retry": (lb.retry, lambda: (3, 1.0, _balancer())),
    "lb.retry_async": (lb.retry_async, lambda: (3, 1.0, _balancer())),
    "kitsd.Transport": (kitsd.Transport, lambda: (sd.MemoryRegistry(),)),
    "kitsd.AsyncTransport": (kitsd.AsyncTransport, lambda: (sd.MemoryRegistry(),)),
    "ClientCredentials": (auth.ClientCredentials, lambda: ("http://o/token", "a", "b")),
    "AsyncClientCredentials": (auth.AsyncClientCredentials,
                               lambda: ("http://o/token", "a", "b")),
    "kitsd.serve.Service": (serve.Service, lambda: (_Registrar(),)),
    "kitsd.serve.ThreadedService": (serve.ThreadedService, lambda: (_Registrar(),)),
    "sd.thrift.factory": (thrift.factory, lambda: (object(), "get")),
    "sd.thrift.async_factory": (thrift.async_factory, lambda: (object(), "get")),
}


@pytest.mark.parametrize("function", sorted(CASES))
def test_a_misspelt_keyword_names_the_public_function(function: str) -> None:
    expected = f"{function}() got an unexpected keyword argument 'tiemout'"
    function_, arguments = CASES[function]
    positional = arguments()
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        function_(*positional, tiemout=1)


def test_keywords_accepts_every_listed_name_and_refuses_the_rest() -> None:
    validate.keywords("f", {"name": 1, "limit": None}, RetryOptions)
    with pytest.raises(TypeError, match=r"^f\(\) got an unexpected keyword argument 'nmae'$"):
        validate.keywords("f", {"name": 1, "nmae": 2}, RetryOptions)
