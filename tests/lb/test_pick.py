"""lb.pick: the per-call exclusion set and the process-wide ejection table, seen by balancers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import lb
from lb import pick
from sd.endpoint import Endpoint
from sd.errors import ConnectionFailure
from tests.helpers import wait_for


class Static:
    """The smallest endpoint source: a fixed list."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)


def noop(name: str) -> Endpoint:
    def endpoint(request: Any) -> str:
        return name

    endpoint.__name__ = name
    return endpoint


class LinkDown(Exception):
    """A transport error of some other library, registered as a connection failure below."""


ConnectionFailure.register(LinkDown)


def test_fixture_installs_a_fresh_table(fresh_ejection_table: lb.EjectionTable) -> None:
    assert lb.ejection_table() is fresh_ejection_table
    assert len(fresh_ejection_table) == 0


def test_set_ejection_table_returns_the_old_one(fresh_ejection_table: lb.EjectionTable) -> None:
    mine = lb.EjectionTable(base=0.5)
    assert lb.set_ejection_table(mine) is fresh_ejection_table
    assert lb.ejection_table() is mine
    assert lb.set_ejection_table(None) is mine
    assert lb.ejection_table() is None


def test_usable_is_the_input_when_nothing_failed() -> None:
    endpoints = [noop("a"), noop("b")]
    assert pick.usable(endpoints) is endpoints
    assert pick.failed_in_call() == frozenset()


def test_failed_in_call_is_excluded_until_reset() -> None:
    a, b, c = endpoints = [noop("a"), noop("b"), noop("c")]
    token = pick.mark_failed_in_call(b)
    try:
        assert pick.failed_in_call() == {id(b)}
        assert list(pick.usable(endpoints)) == [a, c]
        inner = pick.mark_failed_in_call(a)
        assert list(pick.usable(endpoints)) == [c]
        pick.mark_failed_in_call(c)
        assert list(pick.usable(endpoints)) == [a, b, c]  # never empty
        pick.reset_failed_in_call(inner)
        assert list(pick.usable(endpoints)) == [a, c]
    finally:
        pick.reset_failed_in_call(token)
    assert pick.failed_in_call() == frozenset()
    assert pick.usable(endpoints) is endpoints


def test_failed_in_call_with_ejection_disabled() -> None:
    lb.set_ejection_table(None)
    a, b = endpoints = [noop("a"), noop("b")]
    token = pick.mark_failed_in_call(a)
    try:
        assert list(pick.usable(endpoints)) == [b]
        pick.mark_failed_in_call(b)
        assert list(pick.usable(endpoints)) == [a, b]
    finally:
        pick.reset_failed_in_call(token)


def test_failed_in_call_is_per_thread(no_thread_leaks: None) -> None:
    a, b = endpoints = [noop("a"), noop("b")]
    token = pick.mark_failed_in_call(a)
    seen: list[object] = []
    try:
        thread = threading.Thread(target=lambda: seen.append(list(pick.usable(endpoints))))
        thread.start()
        thread.join()
        assert list(pick.usable(endpoints)) == [b]
    finally:
        pick.reset_failed_in_call(token)
    assert seen == [[a, b]]


async def test_failed_in_call_is_per_task() -> None:
    a, b = endpoints = [noop("a"), noop("b")]
    marked = asyncio.Event()
    release = asyncio.Event()

    async def marker() -> list[Endpoint]:
        token = pick.mark_failed_in_call(a)
        try:
            marked.set()
            await release.wait()
            return list(pick.usable(endpoints))
        finally:
            pick.reset_failed_in_call(token)

    async def onlooker() -> list[Endpoint]:
        await marked.wait()
        try:
            return list(pick.usable(endpoints))
        finally:
            release.set()

    assert list(await asyncio.gather(marker(), onlooker())) == [[b], [a, b]]


@pytest.mark.parametrize(
    ("error", "ejects"),
    [
        (ConnectionRefusedError("refused"), True),
        (ConnectionResetError("reset"), True),
        (LinkDown("registered by hand"), True),
        (ValueError("bad request"), False),
        (TimeoutError("slow"), False),
        (OSError("not a connection error"), False),
    ],
)
def test_record_failure_ejects_connection_failures_only(
    error: Exception, ejects: bool, fresh_ejection_table: lb.EjectionTable
) -> None:
    endpoint = noop("e")
    assert pick.record_failure(endpoint, error) is ejects
    assert len(fresh_ejection_table) == int(ejects)


def test_record_success_clears_the_record(fresh_ejection_table: lb.EjectionTable) -> None:
    endpoint = noop("e")
    pick.record_failure(endpoint, ConnectionRefusedError())
    assert len(fresh_ejection_table) == 1
    pick.record_success(endpoint)
    assert len(fresh_ejection_table) == 0


@pytest.mark.parametrize("make", [lb.RoundRobin, lambda s: lb.Random(s, seed=5)])
def test_balancers_skip_an_ejected_endpoint(make: Any) -> None:
    a, b, c = endpoints = [noop("a"), noop("b"), noop("c")]
    balancer = make(Static(endpoints))
    pick.record_failure(b, ConnectionRefusedError())
    picked = {balancer.endpoint() for _ in range(60)}
    assert picked == {a, c}


def test_two_balancers_share_what_they_learn() -> None:
    a, b = endpoints = [noop("a"), noop("b")]
    round_robin, random = lb.RoundRobin(Static(endpoints)), lb.Random(Static(endpoints), seed=1)
    pick.record_failure(a, ConnectionRefusedError())
    assert {round_robin.endpoint() for _ in range(10)} == {b}
    assert {random.endpoint() for _ in range(10)} == {b}


def test_balancers_never_eject_everyone() -> None:
    endpoints = [noop("a"), noop("b"), noop("c")]
    balancer = lb.RoundRobin(Static(endpoints))
    for endpoint in endpoints:
        pick.record_failure(endpoint, ConnectionRefusedError())
    picked = {balancer.endpoint() for _ in range(30)}
    assert len(picked) == 2  # half of three, rounded down, is skipped


def test_ejection_expires() -> None:
    lb.set_ejection_table(lb.EjectionTable(base=0.05, maximum=0.05))
    a, b = endpoints = [noop("a"), noop("b")]
    balancer = lb.RoundRobin(Static(endpoints))
    pick.record_failure(b, ConnectionRefusedError())
    wait_for(lambda: balancer.endpoint() is b, timeout=5.0, what="b back in rotation")
    assert {balancer.endpoint() for _ in range(4)} == {a, b}


def test_none_disables_ejection() -> None:
    lb.set_ejection_table(None)
    a, b = endpoints = [noop("a"), noop("b")]
    balancer = lb.RoundRobin(Static(endpoints))
    assert pick.record_failure(b, ConnectionRefusedError()) is False
    pick.record_success(b)  # harmless without a table
    assert [balancer.endpoint() for _ in range(4)] == [a, b, a, b]
