"""The event seam (kitsd.core.observe): what the stack reports, in which order, and that
observing never changes a call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pybreaker
import pytest

from kitsd import breaker, lb, sd
from kitsd.core import observe
from kitsd.core.observe import (
    AttemptFinished,
    AttemptStarted,
    BreakerStateChanged,
    CallFinished,
    CallStarted,
    DiscoveryFailed,
    DiscoveryUpdated,
    InstanceEjected,
    InstanceRestored,
    Observation,
)
from tests.observe.scenarios import (
    DOWN,
    UP,
    breaker_opening,
    discovery_with_errors,
    endpoint_of,
    retry_with_ejection,
)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def __call__(self, observation: Observation) -> None:
        self.seen.append(observation)

    def of(self, kind: type[Any]) -> list[Any]:
        return [o for o in self.seen if isinstance(o, kind)]


@pytest.fixture
def recorder() -> Any:
    recorder = Recorder()
    with observe.observing(recorder):
        yield recorder
    assert observe.HUB.observers == ()


def test_nothing_listens_by_default() -> None:
    assert observe.HUB.observers == ()
    assert observe.watch_call("svc", 0.0) is None


def test_retry_reports_calls_and_attempts_in_nested_order(recorder: Recorder) -> None:
    retry_with_ejection("users")
    calls = [o for o in recorder.seen if isinstance(o, CallStarted | CallFinished |
                                                    AttemptStarted | AttemptFinished)]
    kinds = [type(o).__name__ for o in calls]
    assert kinds == [
        "CallStarted", "AttemptStarted", "AttemptFinished", "AttemptStarted",
        "AttemptFinished", "CallFinished",
        "CallStarted", "AttemptStarted", "AttemptFinished", "CallFinished",
    ]
    first, second = recorder.of(CallFinished)
    assert (first.service, first.outcome, first.attempts, first.instance) == (
        "users", "success", 2, UP)
    assert (second.attempts, second.instance) == (1, UP)
    attempts = recorder.of(AttemptFinished)
    assert [(a.instance, a.outcome, a.resend_count) for a in attempts] == [
        (DOWN, "error", 0), (UP, "success", 1), (UP, "success", 0)]
    assert isinstance(attempts[0].error, ConnectionRefusedError)
    assert all(a.duration >= 0 for a in attempts)
    assert first.duration >= attempts[0].duration + attempts[1].duration


def test_ejection_is_reported_with_the_calling_stack_name(recorder: Recorder) -> None:
    balancer = retry_with_ejection("users")
    assert balancer.ejected() == [DOWN]
    ejected = recorder.of(InstanceEjected)
    assert [(e.service, e.instance, e.duration) for e in ejected] == [("users", DOWN, 60.0)]
    assert observe.current_service() == observe.DEFAULT_SERVICE  # reset after the call


def test_restoration_is_reported_when_an_ejected_instance_answers(recorder: Recorder) -> None:
    state = {"down": True}

    def factory(instance: str) -> Any:
        def endpoint(request: Any) -> Any:
            if instance == DOWN and state["down"]:
                raise ConnectionRefusedError
            return instance
        return endpoint

    short = lb.OutlierDetection(base_ejection_time=0.01, max_ejection_time=0.01)
    with sd.Endpointer(sd.FixedInstancer([DOWN, UP]), factory) as endpointer:
        balancer = lb.RoundRobin(endpointer, outlier_detection=short)
        call = lb.retry(2, 5.0, balancer, name="users")
        call(None)
        assert len(recorder.of(InstanceEjected)) == 1
        state["down"] = False
        from tests.helpers import wait_for
        wait_for(lambda: balancer.ejected() == [], what="the ejection to end")
        for _ in range(2):
            call(None)
    assert [(r.service, r.instance) for r in recorder.of(InstanceRestored)] == [
        ("users", DOWN)]


def test_giving_up_is_reported_with_the_final_outcome(recorder: Recorder) -> None:
    with sd.Endpointer(sd.FixedInstancer([DOWN]), endpoint_of) as endpointer:
        call = lb.retry(2, 5.0, lb.RoundRobin(endpointer, outlier_detection=None), name="x")
        with pytest.raises(lb.RetryError):
            call(None)
    (finished,) = recorder.of(CallFinished)
    assert (finished.outcome, finished.attempts, finished.instance) == ("error", 2, DOWN)
    assert isinstance(finished.error, lb.RetryError)


def test_no_endpoints_is_an_outcome_without_attempt_observations(recorder: Recorder) -> None:
    with sd.Endpointer(sd.FixedInstancer([]), endpoint_of) as endpointer:
        call = lb.retry(2, 5.0, lb.RoundRobin(endpointer), name="x")
        with pytest.raises(lb.RetryError):
            call(None)
    (finished,) = recorder.of(CallFinished)
    assert (finished.outcome, finished.attempts, finished.instance) == ("no_endpoints", 2, "")
    assert recorder.of(AttemptStarted) == []


async def test_async_timeout_closes_the_attempt_and_the_call(recorder: Recorder) -> None:
    async def slow(request: Any) -> Any:
        await asyncio.sleep(10)

    with sd.Endpointer(sd.FixedInstancer([UP]), lambda instance: slow) as endpointer:
        call = lb.retry_async(1, 0.05, lb.RoundRobin(endpointer), name="slow")
        with pytest.raises(lb.RetryTimeout):
            await call(None)
    kinds = [type(o).__name__ for o in recorder.seen]
    assert kinds == ["CallStarted", "AttemptStarted", "AttemptFinished", "CallFinished"]
    attempt, finished = recorder.seen[2], recorder.seen[3]
    assert isinstance(attempt, AttemptFinished)
    assert isinstance(finished, CallFinished)
    assert (attempt.outcome, finished.outcome, finished.attempts) == ("timeout", "timeout", 1)


async def test_async_outer_cancellation_is_reported_as_cancelled(recorder: Recorder) -> None:
    started = asyncio.Event()

    async def slow(request: Any) -> Any:
        started.set()
        await asyncio.sleep(10)

    with sd.Endpointer(sd.FixedInstancer([UP]), lambda instance: slow) as endpointer:
        call = lb.retry_async(1, 5.0, lb.RoundRobin(endpointer), name="slow")
        task = asyncio.ensure_future(call(None))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (finished,) = recorder.of(CallFinished)
    assert finished.outcome == "cancelled"
    assert recorder.of(AttemptFinished)[0].outcome == "cancelled"


async def test_async_success_and_retry(recorder: Recorder) -> None:
    def factory(instance: str) -> Any:
        async def endpoint(request: Any) -> Any:
            return endpoint_of(instance)(request)
        return endpoint

    with sd.Endpointer(sd.FixedInstancer([DOWN, UP]), factory) as endpointer:
        call = lb.retry_async(3, 5.0, lb.RoundRobin(endpointer), name="a")
        assert await call(None) == UP
    (finished,) = recorder.of(CallFinished)
    assert (finished.outcome, finished.attempts) == ("success", 2)
    assert [a.resend_count for a in recorder.of(AttemptStarted)] == [0, 1]


def test_breaker_transitions_are_reported(recorder: Recorder) -> None:
    cb = breaker_opening("payments")
    changes = [(c.name, c.old, c.new) for c in recorder.of(BreakerStateChanged)]
    assert changes == [("payments", None, "closed"), ("payments", "closed", "open")]
    assert recorder.of(BreakerStateChanged)[1].breaker is cb


def test_breaker_half_open_and_close_are_reported(recorder: Recorder) -> None:
    import time

    from kitsd import breaker
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.01, name="b")
    guarded: breaker.BreakerEndpoint[Any, Any] = breaker.circuit_breaker(cb)(
        lambda request: request)
    cb.open()
    time.sleep(0.02)  # past the reset timeout (a wall-clock rule of pybreaker's)
    assert guarded("x") == "x"
    assert cb.current_state == "closed"
    changes = [(c.old, c.new) for c in recorder.of(BreakerStateChanged)]
    assert changes == [(None, "closed"), ("open", "half-open"), ("half-open", "closed")]


def test_discovery_updates_and_every_failure_are_reported(recorder: Recorder) -> None:
    discovery_with_errors("orders")
    updates = [(u.kind, u.service, u.instances) for u in recorder.of(DiscoveryUpdated)]
    assert updates == [("memory", "orders", 3), ("memory", "orders", 2)]
    failures = recorder.of(DiscoveryFailed)
    assert [(f.kind, f.service, f.instances) for f in failures] == [("memory", "orders", 3)] * 2


def test_memory_registry_labels_its_watch(recorder: Recorder) -> None:
    registry = sd.MemoryRegistry()
    with registry.instancer("users") as instancer:
        instancer.subscribe(lambda event: None)
        registry.registrar("users", "127.0.0.1:80").register()
    assert [(u.kind, u.service, u.instances) for u in recorder.of(DiscoveryUpdated)] == [
        ("memory", "users", 1)]


def test_an_observer_that_raises_changes_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(observation: Observation) -> None:
        raise RuntimeError("observer bug")

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="kitsd.core.observe"), \
            observe.observing(broken, recorder):
        retry_with_ejection("users")
    assert len(recorder.of(CallFinished)) == 2  # the others still hear everything
    complaints = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(complaints) == 1


def test_finished_observations_go_in_reverse_order() -> None:
    order: list[str] = []
    with observe.observing(lambda o: order.append(f"a:{type(o).__name__}"),
                           lambda o: order.append(f"b:{type(o).__name__}")):
        observe.CallWatch("svc", 0.0).finished(None)
    assert order == ["a:CallStarted", "b:CallStarted", "b:CallFinished", "a:CallFinished"]


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "success"),
    (ValueError(), "error"),
    (TimeoutError(), "timeout"),
    (lb.RetryTimeout(1.0, []), "timeout"),
    (lb.NoEndpointsError(), "no_endpoints"),
    (breaker.CircuitOpenError(), "rejected"),
    (lb.RetryError([ValueError()], breaker.CircuitOpenError()), "rejected"),
    (lb.RetryError([ValueError()], lb.RetryBudgetExhausted(ValueError())), "rejected"),
    # pybreaker's own error (its cb.call, or the error that trips a breaker): the call
    # reached the instance, or kitsd cannot tell; no marker, so no "rejected".
    (pybreaker.CircuitBreakerError(), "error"),
    (asyncio.CancelledError(), "cancelled"),
])
def test_outcomes_are_a_closed_set(error: BaseException | None, outcome: str) -> None:
    assert observe.outcome_of(error) == outcome
    assert outcome in observe.OUTCOMES


def test_retry_rejects_a_bad_name() -> None:
    with pytest.raises(TypeError, match="name"):
        lb.retry(1, 1.0, lb.RoundRobin(sd.Endpointer(sd.FixedInstancer([]), endpoint_of)),  # type: ignore[call-overload]
                 name=3)
    with pytest.raises(ValueError, match="name"):
        lb.retry_async(1, 1.0, lb.RoundRobin(sd.Endpointer(sd.FixedInstancer([]), endpoint_of)),
                       name="")


class EndingsOnly(Recorder):
    hears_starts = False


def test_an_observer_of_endings_only_is_sent_no_started_observations(
    recorder: Recorder,
) -> None:
    endings = EndingsOnly()
    with observe.observing(endings):
        assert observe.HUB.starting == (recorder,)
        retry_with_ejection("users")
    assert observe.HUB.starting == (recorder,)
    assert [type(o).__name__ for o in endings.seen
            if isinstance(o, CallFinished | AttemptFinished)] == [
        "AttemptFinished", "AttemptFinished", "CallFinished", "AttemptFinished", "CallFinished"]
    assert endings.of(CallStarted) == []
    assert endings.of(AttemptStarted) == []
    # the other observer still hears every pair, and the endings are the same objects
    assert len(recorder.of(CallStarted)) == 2
    assert len(recorder.of(AttemptStarted)) == 3
    assert recorder.of(CallFinished) == endings.of(CallFinished)


def test_with_only_observers_of_endings_no_started_observation_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []
    for kind in (CallStarted, AttemptStarted):
        monkeypatch.setattr(observe.calls, kind.__name__,
                            lambda *args, kind=kind: made.append(kind.__name__))
    endings = EndingsOnly()
    with observe.observing(endings):
        retry_with_ejection("users")
    assert made == []
    assert len(endings.of(CallFinished)) == 2


def test_the_prometheus_observer_books_endings_only() -> None:
    import kitsd.prometheus

    assert kitsd.prometheus.PrometheusObserver.hears_starts is False
