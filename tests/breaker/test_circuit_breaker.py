"""The circuit-breaker middleware with sync endpoints (async twins in the _async file)."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest

import breaker
from breaker._pybreaker import storage_of
from breaker.guard import TRIAL_IN_PROGRESS
from breaker.middleware import AsyncBreakerEndpoint, SyncBreakerEndpoint
from sd.endpoint import close_endpoint, is_async
from tests.helpers import wait_for


class Boom(Exception):
    """The endpoint's failure."""


class Business(Exception):
    """An error the breaker is told to exclude."""


class Endpoint:
    """A sync endpoint counting its calls; raises ``self.error`` when set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return ("ok", request)


class Recorder(pybreaker.CircuitBreakerListener):
    """Records listener callbacks as comparable tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def before_call(
        self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any
    ) -> None:
        self.events.append(("before_call", func, args))

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.events.append(("failure", type(exc).__name__))

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.events.append(("success",))

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self.events.append(("state_change", old_state and old_state.name, new_state.name))


def elapse_reset_timeout(cb: pybreaker.CircuitBreaker) -> None:
    """Move the breaker's ``opened_at`` back past its reset timeout."""
    opened_at = storage_of(cb).opened_at
    assert opened_at is not None
    storage_of(cb).opened_at = opened_at - timedelta(seconds=cb.reset_timeout + 1)


def trip(cb: pybreaker.CircuitBreaker) -> None:
    """Open ``cb`` through its own failures (pybreaker's path, not ``cb.open()``)."""
    failing = breaker.circuit_breaker(cb)(_raise_boom)
    for _ in range(cb.fail_max):
        with pytest.raises((Boom, pybreaker.CircuitBreakerError)):
            failing(None)
    assert cb.current_state == pybreaker.STATE_OPEN


def _raise_boom(request: Any) -> Any:
    raise Boom(request)


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    before = set(threading.enumerate())
    with ThreadPoolExecutor(max_workers=16) as pool:
        yield pool
    assert set(threading.enumerate()) <= before


# --- go-kit's scenario ---------------------------------------------------------


@pytest.mark.parametrize("fail_max", [1, 3, 5])
def test_opens_after_fail_max_failures_then_short_circuits(fail_max: int) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=60)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)

    # Healthy first: successes pass and are not failures.
    for i in range(3):
        assert guarded(i) == ("ok", i)
    assert cb.fail_counter == 0

    inner.error = Boom("down")
    for _ in range(fail_max - 1):
        with pytest.raises(Boom):
            guarded("x")
        assert cb.current_state == pybreaker.STATE_CLOSED
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        guarded("x")
    assert tripped.value.__cause__ is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    calls_when_open = inner.calls
    assert calls_when_open == 3 + fail_max

    inner.error = None  # even a now-healthy endpoint is not called while open
    for _ in range(10):
        with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
            guarded("x")
    assert inner.calls == calls_when_open


def test_trip_without_new_error_raises_the_original() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, throw_new_error_on_trip=False)
    inner = Endpoint()
    inner.error = Boom("down")
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(Boom):
        guarded(1)
    with pytest.raises(Boom) as raised:
        guarded(2)
    assert raised.value is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    # pybreaker's internal re-raise leaves no trace in the caller's traceback.
    files = [frame.filename for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert not any("pybreaker" in name for name in files)
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(3)
    assert inner.calls == 2


def test_a_success_resets_the_consecutive_failure_count() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=3)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    for _ in range(5):
        inner.error = Boom()
        for _ in range(2):
            with pytest.raises(Boom):
                guarded(None)
        inner.error = None
        guarded(None)
        assert cb.fail_counter == 0
    assert cb.current_state == pybreaker.STATE_CLOSED


# --- half-open -----------------------------------------------------------------


def test_half_open_trial_success_closes() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    trip(cb)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(0)
    assert inner.calls == 0

    elapse_reset_timeout(cb)
    assert guarded(1) == ("ok", 1)
    assert inner.calls == 1
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0


def test_half_open_trial_failure_reopens() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    stale_opened_at = storage_of(cb).opened_at
    inner = Endpoint()
    inner.error = Boom("still down")
    guarded = breaker.circuit_breaker(cb)(inner)

    with pytest.raises(pybreaker.CircuitBreakerError, match="Trial call failed") as raised:
        guarded(1)
    assert raised.value.__cause__ is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    opened_at = storage_of(cb).opened_at
    assert opened_at is not None
    assert stale_opened_at is not None
    assert opened_at > stale_opened_at
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        guarded(2)
    assert inner.calls == 1


def test_reset_timeout_elapses_on_the_real_clock() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05)
    trip(cb)
    opened_at = storage_of(cb).opened_at
    assert opened_at is not None
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    wait_for(
        lambda: datetime.now(UTC) >= opened_at + timedelta(seconds=0.06),
        what="reset timeout to pass",
    )
    assert guarded("again") == ("ok", "again")
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_success_threshold_needs_that_many_trials() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, success_threshold=3)
    trip(cb)
    elapse_reset_timeout(cb)
    guarded = breaker.circuit_breaker(cb)(Endpoint())
    for expected in (pybreaker.STATE_HALF_OPEN, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_CLOSED):
        guarded(None)
        assert cb.current_state == expected


def test_only_one_half_open_trial_in_flight(threads: ThreadPoolExecutor) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    entered, release = threading.Event(), threading.Event()
    calls: list[Any] = []

    def slow(request: Any) -> Any:
        calls.append(request)
        entered.set()
        assert release.wait(5)
        return request

    guarded = breaker.circuit_breaker(cb)(slow)
    trial = threads.submit(guarded, "trial")
    assert entered.wait(5)
    for i in range(5):
        with pytest.raises(pybreaker.CircuitBreakerError, match="half-open trial in progress"):
            guarded(i)
    assert calls == ["trial"]
    assert cb.current_state == pybreaker.STATE_HALF_OPEN

    release.set()
    assert trial.result(5) == "trial"
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert guarded("after") == "after"


@pytest.mark.parametrize("outcome", ["failure", "excluded", "interrupt"])
def test_trial_slot_released_on_every_path(outcome: str) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, exclude=[Business])
    trip(cb)
    elapse_reset_timeout(cb)
    inner = Endpoint()
    inner.error = {"failure": Boom(), "excluded": Business(), "interrupt": KeyboardInterrupt()}[
        outcome
    ]
    guarded = breaker.circuit_breaker(cb)(inner)
    counted = cb.fail_counter
    with pytest.raises((Boom, Business, KeyboardInterrupt, pybreaker.CircuitBreakerError)):
        guarded("trial")
    if outcome == "failure":
        assert cb.current_state == pybreaker.STATE_OPEN
        elapse_reset_timeout(cb)
    elif outcome == "excluded":
        # pybreaker counts an excluded error as a success: the trial closes.
        assert cb.current_state == pybreaker.STATE_CLOSED
    else:
        # An interrupt is no verdict: still half-open, nothing counted.
        assert cb.current_state == pybreaker.STATE_HALF_OPEN
        assert cb.fail_counter == counted
    inner.error = None
    assert guarded("next") == ("ok", "next")  # the slot is free again
    assert cb.current_state == pybreaker.STATE_CLOSED


# --- what counts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exclude",
    [[Business], [lambda exc: isinstance(exc, Business)], [ValueError, Business]],
    ids=["type", "predicate", "several"],
)
def test_excluded_errors_are_not_failures(exclude: list[Any]) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, exclude=exclude)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    inner.error = Business("no such user")
    for _ in range(10):
        with pytest.raises(Business) as raised:
            guarded(None)
        assert raised.value is inner.error
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0
    assert inner.calls == 10

    inner.error = Boom()
    with pytest.raises(Boom):
        guarded(None)
    assert cb.fail_counter == 1


def test_interrupts_are_not_failures() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    recorder = Recorder()
    cb.add_listener(recorder)
    for error in (KeyboardInterrupt(), SystemExit(3), GeneratorExit()):
        inner.error = error
        with pytest.raises(type(error)):
            guarded(None)
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0
    assert [event[0] for event in recorder.events] == ["before_call"] * 3


def test_listeners_fire_as_under_pybreaker() -> None:
    """The same script through ``cb.call`` and through the middleware yields the
    same listener events and the same outcomes."""

    def func(failing: bool) -> str:
        if failing:
            raise Boom
        return "fine"

    # True/False: call failing or not; None: let the reset timeout elapse.
    steps = [False, True, True, False, None, False, True, True, None, True, False, None, False]
    logs = []
    for use_middleware in (False, True):
        recorder = Recorder()
        cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, listeners=[recorder])
        wrapped = breaker.circuit_breaker(cb)(func)
        outcomes: list[tuple[str, Any]] = []
        for failing in steps:
            if failing is None:
                elapse_reset_timeout(cb)
                continue
            try:
                result = wrapped(failing) if use_middleware else cb.call(func, failing)
                outcomes.append(("returned", result))
            except Exception as exc:
                outcomes.append(("raised", type(exc).__name__))
        logs.append((outcomes, recorder.events, cb.current_state))

    assert logs[1] == logs[0]
    outcomes, events, _ = logs[1]
    assert {event[0] for event in events} == {"before_call", "failure", "success", "state_change"}
    assert [event[1:] for event in events if event[0] == "state_change"] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert ("raised", "CircuitBreakerError") in outcomes


def test_before_call_listener_that_raises_admits_nothing() -> None:
    class Refuse(pybreaker.CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("refused")

    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    refuse = Refuse()
    cb.add_listener(refuse)
    with pytest.raises(RuntimeError, match="refused"):
        guarded(None)
    assert inner.calls == 0
    cb.remove_listener(refuse)
    assert guarded(None) == ("ok", None)  # no trial slot was left taken
    assert cb.current_state == pybreaker.STATE_CLOSED


# --- concurrency ---------------------------------------------------------------


def test_calls_are_not_serialised(threads: ThreadPoolExecutor) -> None:
    # Every call waits inside the endpoint for all the others: under pybreaker's
    # cb.call (lock held during the call) this would time out.
    n = 8
    barrier = threading.Barrier(n, timeout=5)
    cb = pybreaker.CircuitBreaker(fail_max=3)

    def endpoint(request: Any) -> Any:
        barrier.wait()
        return request

    guarded = breaker.circuit_breaker(cb)(endpoint)
    results = list(threads.map(guarded, range(n)))
    assert results == list(range(n))
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_concurrent_failures_trip_once(threads: ThreadPoolExecutor) -> None:
    n = 8
    barrier = threading.Barrier(n, timeout=5)
    recorder = Recorder()
    cb = pybreaker.CircuitBreaker(fail_max=3, listeners=[recorder])

    def endpoint(request: Any) -> Any:
        barrier.wait()
        raise Boom(request)

    guarded = breaker.circuit_breaker(cb)(endpoint)

    def outcome(request: Any) -> str:
        try:
            guarded(request)
        except Exception as exc:
            return type(exc).__name__
        return "returned"

    outcomes = list(threads.map(outcome, range(n)))
    # The 3rd failure trips; the others finish after the trip: stale, so they
    # raise their own error and are not counted against the open breaker.
    assert sorted(outcomes) == ["Boom"] * (n - 1) + ["CircuitBreakerError"]
    assert cb.current_state == pybreaker.STATE_OPEN
    assert [e for e in recorder.events if e[0] == "state_change"] == [
        ("state_change", "closed", "open")
    ]
    assert sum(1 for e in recorder.events if e[0] == "failure") == n  # all still heard


def test_stale_outcomes_drive_no_transition(threads: ThreadPoolExecutor) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    entered, release = threading.Event(), threading.Event()

    def slow(request: Any) -> Any:
        entered.set()
        assert release.wait(5)
        if request == "fail":
            raise Boom
        return request

    guarded = breaker.circuit_breaker(cb)(slow)
    for late in ("fail", "succeed"):
        cb.close()
        entered.clear()
        release.clear()
        slow_call = threads.submit(guarded, late)  # admitted while closed
        assert entered.wait(5)
        trip(cb)
        elapse_reset_timeout(cb)
        cb.half_open()  # a new half-open period, awaiting its own trial
        release.set()
        counted = cb.fail_counter
        if late == "fail":
            with pytest.raises(Boom):  # its own error, not a trip
                slow_call.result(5)
        else:
            assert slow_call.result(5) == "succeed"
        assert cb.current_state == pybreaker.STATE_HALF_OPEN
        assert cb.fail_counter == counted


# --- shape ---------------------------------------------------------------------


def test_wrapped_sync_endpoint_is_sync() -> None:
    cb = pybreaker.CircuitBreaker()
    guarded = breaker.circuit_breaker(cb)(Endpoint())
    assert isinstance(guarded, SyncBreakerEndpoint)
    assert not isinstance(guarded, AsyncBreakerEndpoint)
    assert not is_async(guarded)
    assert guarded.breaker is cb
    assert not is_async(breaker.circuit_breaker(cb)(lambda request: request))


def test_rejects_what_is_not_a_breaker() -> None:
    with pytest.raises(TypeError, match=r"pybreaker\.CircuitBreaker"):
        breaker.circuit_breaker(object())  # type: ignore[arg-type]


def test_close_is_forwarded_exactly_when_present() -> None:
    class Closable(Endpoint):
        def __init__(self) -> None:
            super().__init__()
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    cb = pybreaker.CircuitBreaker()
    inner = Closable()
    guarded = breaker.circuit_breaker(cb)(inner)
    assert callable(getattr(guarded, "close", None))
    assert getattr(guarded, "aclose", None) is None
    assert close_endpoint(guarded) is None
    assert inner.closed == 1

    plain = breaker.circuit_breaker(cb)(Endpoint())
    assert not hasattr(plain, "close")
    assert not hasattr(plain, "aclose")
    assert close_endpoint(plain) is None  # nothing to close, no error


def test_aclose_only_endpoint_is_closed_through_the_wrapper() -> None:
    class AsyncClosable(Endpoint):
        def __init__(self) -> None:
            super().__init__()
            self.closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    inner = AsyncClosable()
    guarded = breaker.circuit_breaker(pybreaker.CircuitBreaker())(inner)
    assert not hasattr(guarded, "close")
    assert close_endpoint(guarded) is None  # no loop running: run to completion here
    assert inner.closed == 1


def test_nested_wrappers_forward_close() -> None:
    class Closable(Endpoint):
        closed = False

        def close(self) -> None:
            self.closed = True

    inner = Closable()
    outer = breaker.circuit_breaker(pybreaker.CircuitBreaker())(
        breaker.circuit_breaker(pybreaker.CircuitBreaker())(inner)
    )
    outer.close()
    assert inner.closed


def test_public_surface() -> None:
    assert breaker.CircuitBreakerError is pybreaker.CircuitBreakerError
    for name in breaker.__all__:
        assert hasattr(breaker, name), name
    assert {"circuit_breaker", "per_instance", "CircuitBreakerError"} <= set(breaker.__all__)
    assert TRIAL_IN_PROGRESS.endswith("half-open trial in progress")
