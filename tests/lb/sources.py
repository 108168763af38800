"""Endpoint sources and endpoints shared by the balancer tests."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from kitsd.core.endpoint import Endpoint
from kitsd.lb.balancer import Balancer


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


def picks_from_threads(
    balancer: Balancer, threads_n: int, picks_n: int
) -> Counter[Callable[[Any], Any]]:
    """Pick ``picks_n`` times from each of ``threads_n`` threads started together;
    returns how often each endpoint was picked, and fails on any error in a thread."""
    barrier = threading.Barrier(threads_n)
    totals: Counter[Callable[[Any], Any]] = Counter()
    totals_lock = threading.Lock()
    problems: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            local = Counter(balancer.endpoint() for _ in range(picks_n))
            with totals_lock:
                totals.update(local)
        except BaseException as error:  # reported below
            problems.append(error)

    threads = [threading.Thread(target=worker, name=f"picker-{n}") for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    return totals


class WithInfo:
    """A snapshot source whose sets carry metadata (what instancers that know weights
    publish); ``set()`` hands out a new set, as an event would."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.set(weights)

    def set(self, weights: dict[str, int]) -> None:
        from kitsd.sd.endpoint_set import EndpointSet
        from kitsd.sd.instance_info import InstanceInfo

        instances = tuple(sorted(weights))
        self._set = EndpointSet(instances, tuple(noop(name) for name in instances),
                                info={k: InstanceInfo(weight=w) for k, w in weights.items()})

    def snapshot(self) -> Any:
        return self._set

    def endpoints(self) -> list[Endpoint]:
        return list(self._set.endpoints)
