"""lb.HealthCheckers against real instances: HTTP and gRPC health v1, one prober per
instance shared by every stack, jitter, and nothing left running after close()."""

from __future__ import annotations

import gc
import itertools
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from kitsd.lb.health_check import GrpcCheck, HttpCheck
from kitsd.lb.health_checkers import (
    HealthCheckers,
    Subscription,
    _health_request,
    _health_status,
    check_health_check,
)
from kitsd.lb.health_checkers_policy import Change, Verdict
from tests.helpers import wait_for
from tests.lb.health_servers import BareGrpcInstance, GrpcHealthInstance, HealthInstance

FAST = HttpCheck(path="/health", interval=0.05, timeout=0.05, jitter=0.0,
                 unhealthy_threshold=2)


class Heard:
    """A listener that records what it hears."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, float, Change]] = []
        self._lock = threading.Lock()

    def __call__(self, instance: str, passed: bool, started: float, change: Change) -> None:
        with self._lock:
            self.results.append((instance, passed, started, change))

    def changes(self, instance: str) -> list[Change]:
        with self._lock:
            return [change for key, _, _, change in self.results
                    if key == instance and change is not Change.NONE]


@pytest.fixture
def instance() -> Iterator[HealthInstance]:
    server = HealthInstance()
    yield server
    server.kill()


@pytest.fixture
def checkers(no_thread_leaks: None) -> Iterator[HealthCheckers]:
    with HealthCheckers(seed=1) as owner:
        yield owner


def test_bad_arguments_are_refused() -> None:
    for kwargs, name in (({"concurrency": 0}, "concurrency"), ({"concurrency": 1.5}, "concurrency"),
                         ({"clock": 3}, "clock"), ({"http_client": object()}, "http_client")):
        with pytest.raises((TypeError, ValueError)) as caught:
            HealthCheckers(**kwargs)
        assert str(caught.value).startswith(name)
    with pytest.raises(TypeError, match=r"^health_check must be"):
        check_health_check("/health")
    assert check_health_check(None) is None
    with HealthCheckers() as owner:
        with pytest.raises(TypeError, match=r"^check must be"):
            owner.subscribe("/health", Heard())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^listener"):
            owner.subscribe(FAST, None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="closed"):
        owner.subscribe(FAST, Heard())


def test_an_http_check_takes_an_instance_out_and_brings_it_back(
        checkers: HealthCheckers, instance: HealthInstance) -> None:
    heard = Heard()
    subscription = checkers.subscribe(FAST, heard)
    subscription.watch([instance.address])
    wait_for(lambda: subscription.verdict(instance.address) is Verdict.HEALTHY,
             what="first pass")
    instance.health_status = 503
    wait_for(lambda: not subscription.healthy(instance.address), what="unhealthy")
    instance.health_status = 200
    wait_for(lambda: subscription.healthy(instance.address), what="healthy again")
    assert heard.changes(instance.address)[:3] == [Change.HEALTHY, Change.UNHEALTHY,
                                                    Change.RECOVERED]


def test_a_dead_instance_fails_its_checks(checkers: HealthCheckers,
                                          instance: HealthInstance) -> None:
    subscription = checkers.subscribe(FAST, Heard())
    subscription.watch([instance.address])
    wait_for(lambda: subscription.verdict(instance.address) is Verdict.HEALTHY)
    instance.kill()  # connections cut, listener closed
    wait_for(lambda: not subscription.healthy(instance.address), what="unhealthy")
    instance.revive()
    wait_for(lambda: subscription.healthy(instance.address), what="back")


def test_statuses_and_headers(checkers: HealthCheckers, instance: HealthInstance) -> None:
    check = HttpCheck(path="/health", interval=0.05, timeout=0.05, statuses={204},
                      unhealthy_threshold=1, headers={"Authorization": "Bearer t0ken"})
    subscription = checkers.subscribe(check, Heard())
    subscription.watch([instance.address])
    wait_for(lambda: not subscription.healthy(instance.address), what="200 is not 204")
    assert instance.headers[0]["Authorization"] == "Bearer t0ken"
    instance.health_status = 204
    wait_for(lambda: subscription.healthy(instance.address))


def test_a_slow_answer_is_a_failed_check(checkers: HealthCheckers,
                                         instance: HealthInstance) -> None:
    check = HttpCheck(path="/health", interval=0.1, timeout=0.05, unhealthy_threshold=1)
    instance.health_delay = 0.2
    subscription = checkers.subscribe(check, Heard())
    subscription.watch([instance.address])
    wait_for(lambda: not subscription.healthy(instance.address), what="timed out")


def test_one_prober_per_instance_whatever_the_stacks(checkers: HealthCheckers) -> None:
    servers = [HealthInstance() for _ in range(3)]
    try:
        addresses = [server.address for server in servers]
        check = HttpCheck(path="/health", interval=0.1, timeout=0.1, jitter=0.0)
        heard = Heard()
        stacks = [checkers.subscribe(check, heard if number == 0 else Heard())
                  for number in range(4)]
        for stack in stacks:
            stack.watch(addresses)
        # same probe, other coverage: still the same prober
        stacks.append(checkers.subscribe(
            HttpCheck(path="/health", interval=0.1, timeout=0.1, jitter=0.0,
                      covers={"connection", "errors"}), Heard()))
        stacks[-1].watch(addresses)
        assert checkers.probes == 3
        wait_for(lambda: all(server.health_checks() >= 6 for server in servers))
        with heard._lock:
            results = list(heard.results)
        for address in addresses:
            started = [when for instance, _, when, _ in results if instance == address]
            # one check per interval, never closer (five probers would interleave)
            assert min(b - a for a, b in itertools.pairwise(started)) >= 0.1 - 1e-3
        other = checkers.subscribe(HttpCheck(path="/other", interval=0.1, timeout=0.1),
                                   Heard())
        other.watch(addresses[:1])
        assert checkers.probes == 4  # another check is another probe
    finally:
        for server in servers:
            server.kill()


def test_every_stack_hears_every_result(checkers: HealthCheckers,
                                        instance: HealthInstance) -> None:
    first, second = Heard(), Heard()
    for heard in (first, second):
        checkers.subscribe(FAST, heard).watch([instance.address])
    gc.collect()  # the subscriptions were not kept: they are gone, and so is the prober
    assert checkers.probes == 0
    kept = [checkers.subscribe(FAST, heard) for heard in (first, second)]
    for subscription in kept:
        subscription.watch([instance.address])
    wait_for(lambda: len(first.results) >= 3 and len(second.results) >= 3)
    assert checkers.probes == 1


def test_unwatching_stops_the_prober(checkers: HealthCheckers, instance: HealthInstance) -> None:
    one = checkers.subscribe(FAST, Heard())
    two = checkers.subscribe(FAST, Heard())
    one.watch([instance.address])
    two.watch([instance.address])
    one.watch([])
    assert checkers.probes == 1  # the other stack still watches
    two.close()
    two.close()
    assert checkers.probes == 0
    count = instance.health_checks()
    threading.Event().wait(0.2)
    assert instance.health_checks() <= count + 1  # at most one already under way


def test_a_collected_stack_stops_watching(checkers: HealthCheckers,
                                          instance: HealthInstance) -> None:
    def watch_and_forget() -> None:
        subscription: Subscription | None = checkers.subscribe(FAST, Heard())
        assert subscription is not None
        subscription.watch([instance.address])
        assert checkers.probes == 1

    watch_and_forget()
    gc.collect()
    assert checkers.probes == 0


def test_first_checks_are_spread_over_an_interval(checkers: HealthCheckers) -> None:
    # Read the times the checker started each check (what it schedules by), not the
    # arrivals at the servers: a busy machine delays those unevenly.
    servers = [HealthInstance() for _ in range(12)]
    try:
        created = time.monotonic()
        check = HttpCheck(path="/health", interval=1.0, timeout=0.5, jitter=0.2)
        heard = Heard()
        subscription = checkers.subscribe(check, heard)
        subscription.watch([server.address for server in servers])

        def starts() -> dict[str, list[float]]:
            found: dict[str, list[float]] = {server.address: [] for server in servers}
            with heard._lock:
                for instance, _, started, _ in heard.results:
                    found[instance].append(started)
            return found

        wait_for(lambda: all(len(times) >= 3 for times in starts().values()), timeout=20)
        found = starts()
        firsts = sorted(times[0] - created for times in found.values())
        assert firsts[-1] - firsts[0] > 0.3  # spread over the first interval, not at once
        gaps = [b - a for times in found.values() for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.8 - 1e-3  # interval * (1 - jitter), never less
        assert statistics.median(gaps) < 1.3
        assert len({round(gap, 3) for gap in gaps}) > len(gaps) // 2  # jittered, not in step
    finally:
        for server in servers:
            server.kill()


def test_close_stops_everything(no_thread_leaks: None, instance: HealthInstance) -> None:
    owner = HealthCheckers()
    subscription = owner.subscribe(FAST, Heard())
    subscription.watch([instance.address])
    wait_for(lambda: instance.health_checks() >= 2)
    owner.close()
    owner.close()
    assert owner.probes == 0
    count = instance.health_checks()
    threading.Event().wait(0.2)
    assert instance.health_checks() == count
    subscription.watch([instance.address])  # a closed owner watches nothing
    assert owner.probes == 0
    assert "closed" in repr(owner)


def test_a_client_of_your_own_is_used_and_left_open(instance: HealthInstance) -> None:
    with httpx.Client() as client:
        with HealthCheckers(http_client=client) as owner:
            subscription = owner.subscribe(FAST, Heard())
            subscription.watch([instance.address])
            wait_for(lambda: subscription.verdict(instance.address) is Verdict.HEALTHY)
        assert not client.is_closed


# --- gRPC health v1 ----------------------------------------------------------------------


def test_grpc_wire_format() -> None:
    assert _health_request("") == b""
    assert _health_request("users") == b"\x0a\x05users"
    long = "s" * 200
    assert _health_request(long) == b"\x0a\xc8\x01" + long.encode()
    assert _health_status(b"\x08\x01") == 1
    assert _health_status(b"\x08\x02") == 2
    assert _health_status(b"") == 0
    assert _health_status(b"\x12\x02ab\x08\x01") == 1  # an unknown field first


def test_a_grpc_check_follows_the_health_service(checkers: HealthCheckers) -> None:
    server = GrpcHealthInstance()
    try:
        server.set("users", serving=True)
        whole = checkers.subscribe(GrpcCheck(interval=0.1, timeout=0.1, jitter=0.0,
                                             unhealthy_threshold=1), Heard())
        users = checkers.subscribe(GrpcCheck(service="users", interval=0.1, timeout=0.1,
                                             jitter=0.0, unhealthy_threshold=1), Heard())
        unknown = checkers.subscribe(GrpcCheck(service="nope", interval=0.1, timeout=0.1,
                                               unhealthy_threshold=1), Heard())
        for subscription in (whole, users, unknown):
            subscription.watch([server.address])
        wait_for(lambda: whole.verdict(server.address) is Verdict.HEALTHY)
        wait_for(lambda: users.verdict(server.address) is Verdict.HEALTHY)
        wait_for(lambda: unknown.verdict(server.address) is Verdict.UNHEALTHY)  # NOT_FOUND
        server.set("users", serving=False)
        wait_for(lambda: users.verdict(server.address) is Verdict.UNHEALTHY)
        assert whole.healthy(server.address)
        server.set("users", serving=True)
        wait_for(lambda: users.healthy(server.address))
        server.kill()
        wait_for(lambda: not whole.healthy(server.address), what="dead server")
    finally:
        server.kill()


def test_a_grpc_server_without_the_health_service_fails(checkers: HealthCheckers) -> None:
    server = BareGrpcInstance()
    try:
        subscription = checkers.subscribe(GrpcCheck(interval=0.1, timeout=0.1,
                                                    unhealthy_threshold=1), Heard())
        subscription.watch([server.address])
        wait_for(lambda: subscription.verdict(server.address) is Verdict.UNHEALTHY)
    finally:
        server.kill()


def test_a_grpc_check_without_grpcio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "grpc", None)  # what a missing grpcio looks like
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'kitsd\[grpc\]'"):
        check_health_check(GrpcCheck())
    assert check_health_check(FAST) is FAST  # HTTP checks need nothing more


@pytest.mark.timeout(30)
def test_a_stack_collected_inside_the_checkers_lock_does_not_deadlock(
        checkers: HealthCheckers, instance: HealthInstance) -> None:
    # A finalizer runs wherever the collection happens, even in code of this thread
    # holding the checkers' (non-reentrant) lock: the release waits for the scheduler.
    subscription: Subscription | None = checkers.subscribe(FAST, Heard())
    assert subscription is not None
    subscription.watch([instance.address])
    with checkers._lock:
        del subscription
        gc.collect()
    assert checkers.probes == 0
