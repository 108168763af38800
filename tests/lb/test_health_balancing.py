"""Active health checks on balancers, end to end against real HTTP instances: what a
failing check takes out, what a passing check may bring back (the Envoy reports
envoy#24217, #28303 and #32442 replayed, and the 5xx a health route cannot see),
and probers shared by every stack."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from kitsd import lb, sd
from kitsd.lb.health_checkers_policy import Verdict
from tests.helpers import wait_for
from tests.lb.health_servers import HealthInstance

CHECK = lb.HttpCheck(path="/health", interval=0.05, timeout=0.05, jitter=0.0,
                     unhealthy_threshold=2)


@pytest.fixture
def instances(no_thread_leaks: None) -> Iterator[list[HealthInstance]]:
    servers = [HealthInstance() for _ in range(3)]
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture
def checkers(no_thread_leaks: None) -> Iterator[lb.HealthCheckers]:
    with lb.HealthCheckers(seed=2) as owner:
        yield owner


class Stack:
    """A balancer over real instances whose endpoints GET /app (sd.http), with a
    count of attempts per instance and of connection failures."""

    def __init__(self, servers: list[HealthInstance], make: Callable[..., Any],
                 **options: Any) -> None:
        self.attempts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        build: Callable[[str], Any] = sd.http.factory("GET", "/app", encode=lambda request: {},
                                decode=lambda response: response.text,
                                client_kwargs={"timeout": 0.5})

        def factory(instance: str) -> Callable[[Any], str]:
            endpoint = build(instance)

            def call(request: Any) -> str:
                with self._lock:
                    self.attempts[instance] += 1
                try:
                    return str(endpoint(request))
                except sd.http.ConnectError:
                    with self._lock:
                        self.refused[instance] += 1
                    raise

            call.close = endpoint.close  # type: ignore[attr-defined]
            return call

        self.endpointer = sd.Endpointer(
            sd.FixedInstancer([server.address for server in servers]), factory)
        self.balancer = make(self.endpointer, **options)
        self.call = lb.retry(3, 2.0, self.balancer)

    def picks(self, count: int = 300) -> Counter[str]:
        return Counter(self.balancer.pick().instance for _ in range(count))

    def close(self) -> None:
        self.balancer.close()
        self.endpointer.close()


MAKERS: dict[str, Callable[..., Any]] = {
    "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
    "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=1, **options),
    "Weighted": lambda source, **options: lb.Weighted(source, **options),
    "LeastLoaded": lambda source, **options: lb.LeastLoaded(source, seed=1, **options),
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_a_failing_check_takes_an_instance_out_and_back(
        make: Callable[..., Any], instances: list[HealthInstance],
        checkers: lb.HealthCheckers) -> None:
    stack = Stack(instances, make, health_check=CHECK, health_checkers=checkers)
    try:
        sick = instances[1]
        sick.health_status = 503
        wait_for(lambda: stack.balancer.unhealthy() == [sick.address], what="unhealthy")
        assert sick.address not in stack.picks()
        sick.health_status = 200
        wait_for(lambda: stack.balancer.unhealthy() == [], what="healthy again")
        assert sick.address in stack.picks()
    finally:
        stack.close()


def test_envoy_24217_a_passing_check_ends_a_connection_ejection_early(
        instances: list[HealthInstance], checkers: lb.HealthCheckers) -> None:
    # Ejected for a refused connection for a minute; the instance is back after a
    # moment and its checks pass: it takes calls again now, not in a minute.
    long = lb.OutlierDetection(base_ejection_time=60.0, max_ejection_time=60.0)
    # a threshold the checks will not reach while it is down: traffic ejects it first
    patient = lb.HttpCheck(path="/health", interval=0.05, timeout=0.05, jitter=0.0,
                           unhealthy_threshold=1000)
    stack = Stack(instances, lambda source, **options: lb.RoundRobin(source, **options),
                  health_check=patient, health_checkers=checkers, outlier_detection=long)
    try:
        flaky = instances[0]
        wait_for(lambda: all(server.health_checks() for server in instances))
        flaky.kill()
        for number in range(10):
            stack.call(number)  # the retry meets the refusal and ejects it
        assert stack.balancer.ejected() == [flaky.address]
        flaky.revive()
        started = time.monotonic()
        wait_for(lambda: stack.balancer.ejected() == [], timeout=5, what="un-ejected")
        assert time.monotonic() - started < 5  # not the 60 s of the ejection
        assert flaky.address in stack.picks()
    finally:
        stack.close()


def test_envoy_28303_no_traffic_goes_back_to_a_dead_instance(
        instances: list[HealthInstance], checkers: lb.HealthCheckers) -> None:
    # Envoy un-ejected whatever the checks said and shifted calls back onto the dead
    # instance, failing some. Here: once ejected, the dead instance gets no attempt
    # while its checks fail, and no call fails.
    long = lb.OutlierDetection(base_ejection_time=30.0, max_ejection_time=30.0)
    stack = Stack(instances, lambda source, **options: lb.PeakEWMA(source, seed=4, **options),
                  health_check=CHECK, health_checkers=checkers, outlier_detection=long)
    try:
        dead = instances[2]
        wait_for(lambda: all(server.health_checks() for server in instances))
        dead.kill()
        failed = 0
        deadline = time.monotonic() + 1.5  # about 30 check intervals
        calls = 0
        while time.monotonic() < deadline:
            try:
                stack.call(calls)
            except Exception:
                failed += 1
            calls += 1
        assert failed == 0
        assert stack.refused[dead.address] == 1  # the first refusal ejected it; no more
        assert stack.balancer.ejected() == [dead.address]
        assert stack.balancer.unhealthy() == [dead.address]
    finally:
        stack.close()


def test_envoy_32442_checks_below_the_threshold_never_uneject(
        instances: list[HealthInstance], checkers: lb.HealthCheckers) -> None:
    # Down, ejected by traffic, and its checks fail — but fewer times than the
    # unhealthy threshold so far. Envoy un-ejected it on such a (failing) check.
    check = lb.HttpCheck(path="/health", interval=0.1, timeout=0.05, jitter=0.0,
                         unhealthy_threshold=5)
    long = lb.OutlierDetection(base_ejection_time=30.0, max_ejection_time=30.0)
    stack = Stack(instances, lambda source, **options: lb.RoundRobin(source, **options),
                  health_check=check, health_checkers=checkers, outlier_detection=long)
    try:
        dead = instances[0]
        wait_for(lambda: all(server.health_checks() for server in instances))
        dead.kill()
        for number in range(6):
            stack.call(number)
        assert stack.balancer.ejected() == [dead.address]
        # until the checks reach the threshold, it stays ejected at every look
        subscription = stack.balancer._shaping._subscription
        while subscription.verdict(dead.address) is not Verdict.UNHEALTHY:
            assert stack.balancer.ejected() == [dead.address]
            time.sleep(0.01)
        assert stack.balancer.ejected() == [dead.address]
    finally:
        stack.close()


@pytest.mark.parametrize("covers", [None, {"connection", "errors"}])
def test_5xx_ejections_are_not_undone_by_a_health_route(
        covers: set[str] | None, instances: list[HealthInstance],
        checkers: lb.HealthCheckers) -> None:
    # /app answers 500 while /health answers 200: the route the check sees is fine,
    # the one calls use is not. Unless the check says it covers errors, its passes
    # leave the ejection alone.
    check = CHECK if covers is None else lb.HttpCheck(
        path="/health", interval=0.05, timeout=0.05, jitter=0.0, covers=covers)
    policy = lb.OutlierDetection(consecutive_errors=1, base_ejection_time=30.0,
                                 max_ejection_time=30.0)
    stack = Stack(instances, lambda source, **options: lb.RoundRobin(source, **options),
                  health_check=check, health_checkers=checkers, outlier_detection=policy)
    try:
        broken = instances[1]
        broken.app_status = 500
        for number in range(6):
            stack.call(number)
        ejections = stack.balancer._ejections
        assert ejections.records[broken.address].ejections >= 1  # ejected for its 500
        if covers is None:
            passes = broken.health_checks()
            wait_for(lambda: broken.health_checks() >= passes + 5, what="checks passing")
            assert stack.balancer.ejected() == [broken.address]  # still out
        else:  # the check vouches for the routes too: its passes end the ejection
            wait_for(lambda: stack.balancer.ejected() == [], what="un-ejected")
    finally:
        stack.close()


def test_a_recovered_instance_ramps_again(instances: list[HealthInstance],
                                          checkers: lb.HealthCheckers) -> None:
    stack = Stack(instances, lambda source, **options: lb.RoundRobin(source, **options),
                  health_check=CHECK, health_checkers=checkers,
                  slow_start=lb.SlowStart(window=60.0))
    try:
        sick = instances[2]
        stack.picks(10)
        warming = stack.balancer._shaping.warming
        sick.health_status = 503
        wait_for(lambda: stack.balancer.unhealthy() == [sick.address])
        assert warming.started(sick.address) is None  # it was warm
        sick.health_status = 200
        wait_for(lambda: stack.balancer.unhealthy() == [])
        assert warming.started(sick.address) is not None  # back: it ramps (Envoy's rule)
        got = stack.picks(3000)
        assert got[sick.address] < 300  # about 10 % of a third
    finally:
        stack.close()


def test_one_prober_per_instance_across_stacks(instances: list[HealthInstance],
                                               checkers: lb.HealthCheckers) -> None:
    stacks = [Stack(instances, make, health_check=CHECK, health_checkers=checkers)
              for make in MAKERS.values()]
    try:
        for stack in stacks:
            stack.picks(5)
        assert checkers.probes == 3
        stacks[0].close()
        assert checkers.probes == 3  # the others still watch
        for stack in stacks[1:3]:
            stack.close()
        last = stacks[3]
        del stacks[3]
        assert checkers.probes == 3
        last.endpointer.close()
        del last
        # a balancer nobody holds stops watching once collected; a thread that was
        # still finishing with it (the Endpointer's closer, a prober's last probe) may
        # hold it a moment longer under load: collect until then
        wait_for(lambda: gc.collect() >= 0 and checkers.probes == 0, timeout=10.0,
                 what="the collected balancer's probers released")
    finally:
        for stack in stacks:
            stack.close()


def test_the_transport_style_client_sees_no_difference_without_checks(
        instances: list[HealthInstance]) -> None:
    stack = Stack(instances, lambda source, **options: lb.RoundRobin(source, **options))
    try:
        assert stack.balancer.unhealthy() == []
        answers = Counter(stack.call(number).split()[0] for number in range(30))
        assert len(answers) == 3
    finally:
        stack.close()


def test_http_client_errors_are_failed_checks() -> None:
    assert issubclass(httpx.ConnectError, Exception)
