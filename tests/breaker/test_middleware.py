"""The circuit-breaker middleware with sync endpoints (async twins in the _async file)."""

from __future__ import annotations

import contextlib
import inspect
import pkgutil
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest

from kitsd import breaker
from kitsd.breaker._pybreaker import storage_of
from kitsd.breaker.driver_policy import TRIAL_IN_PROGRESS
from kitsd.breaker.middleware import AsyncBreakerEndpoint, SyncBreakerEndpoint
from kitsd.core.endpoint import close_endpoint, is_async
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


def kind(exc: BaseException) -> str:
    """The error's class name, pybreaker's for every ``CircuitBreakerError`` (an open
    breaker raises kitsd's subclass, ``breaker.CircuitOpenError``)."""
    if isinstance(exc, pybreaker.CircuitBreakerError):
        return "CircuitBreakerError"
    return type(exc).__name__


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
                outcomes.append(("raised", kind(exc)))
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


# ok: returns; boom: a failure; business: an error the breaker may exclude;
# wait: let the reset timeout elapse; open/close/half_open: an operator steers the breaker.
SCRIPT = [
    "ok", "boom", "business", "boom", "boom", "ok", "wait", "business", "boom", "wait", "ok",
    "ok", "boom", "ok", "boom", "boom", "boom", "wait", "boom", "wait", "ok", "ok", "ok",
    "open", "ok", "wait", "ok", "half_open", "ok", "ok", "close", "boom", "ok",
]


@pytest.mark.parametrize(
    "config",
    [
        {"fail_max": 2},
        {"fail_max": 3, "success_threshold": 2},
        {"fail_max": 2, "throw_new_error_on_trip": False},
        {"fail_max": 2, "exclude": [Business]},
        {"fail_max": 1, "exclude": [lambda exc: isinstance(exc, Business)], "success_threshold": 3},
    ],
    ids=["default", "success_threshold", "original_error_on_trip", "exclude", "predicate"],
)
def test_scripts_match_pybreaker_step_by_step(config: dict[str, Any]) -> None:
    """Each step of one script, through ``cb.call`` and through the middleware, ends
    with the same outcome (type, message, cause), the same listener events, and
    the same state and counters as pybreaker reports them."""

    def func(step: str) -> str:
        if step == "boom":
            raise Boom(step)
        if step == "business":
            raise Business(step)
        return step

    traces = []
    for use_middleware in (False, True):
        recorder = Recorder()
        cb = pybreaker.CircuitBreaker(reset_timeout=60, listeners=[recorder], **config)
        wrapped = breaker.circuit_breaker(cb)(func)
        trace: list[tuple[Any, ...]] = []
        for step in SCRIPT:
            recorder.events.clear()
            if step == "wait":
                elapse_reset_timeout(cb)
                outcome: tuple[Any, ...] = ("waited",)
            elif step in ("open", "close", "half_open"):
                getattr(cb, step)()
                outcome = ("steered",)
            else:
                try:
                    outcome = ("returned", wrapped(step) if use_middleware else cb.call(func, step))
                except Exception as exc:
                    cause = exc.__cause__ or exc.__context__
                    outcome = ("raised", kind(exc), str(exc), type(cause).__name__)
            trace.append(
                (step, outcome, tuple(recorder.events), cb.current_state, cb.fail_counter,
                 cb.success_counter)
            )
        traces.append(trace)

    for theirs, ours in zip(*traces, strict=True):
        assert ours == theirs
    states = {entry[3] for entry in traces[1]}
    assert states == {pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN}


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
            return kind(exc)
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


class PausingStorage(pybreaker.CircuitBreakerStorage):
    """A memory storage whose failure increment can stop between its read and its
    write (``paused``), to interleave other calls there deterministically."""

    def __init__(self) -> None:
        super().__init__("pausing")
        self._state = pybreaker.STATE_CLOSED
        self._counter = 0
        self._successes = 0
        self._opened_at: datetime | None = None
        self.paused = False
        self.reading = threading.Event()
        self.go = threading.Event()

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state

    def increment_counter(self) -> None:
        value = self._counter
        if self.paused:
            self.reading.set()
            assert self.go.wait(5)
        self._counter = value + 1

    def reset_counter(self) -> None:
        self._counter = 0

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_at = value


def test_a_success_never_races_a_failure_on_the_count(threads: ThreadPoolExecutor) -> None:
    # A failure is counting (read 1, about to write 2) when a success ends.  The
    # count must end as if one came first: 0 (failure, then success) or 1 (success,
    # then failure); a success resetting it in between would leave 2.
    storage = PausingStorage()
    cb = pybreaker.CircuitBreaker(fail_max=3, state_storage=storage)
    guarded: breaker.BreakerEndpoint[Any, Any] = breaker.circuit_breaker(cb)(
        lambda request: request)
    failing = breaker.circuit_breaker(cb)(_raise_boom)
    with pytest.raises(Boom):
        failing(None)
    assert cb.fail_counter == 1

    storage.paused = True
    failure = threads.submit(failing, None)
    assert storage.reading.wait(5)
    success = threads.submit(guarded, "fine")
    # Let an unguarded reset happen now, if the code has one; ours waits for the failure.
    wait_futures([success], timeout=0.2)
    storage.go.set()
    with pytest.raises(Boom):
        failure.result(5)
    assert success.result(5) == "fine"
    assert cb.fail_counter in (0, 1)
    assert cb.current_state == pybreaker.STATE_CLOSED


def test_a_closed_breaker_reads_no_clock() -> None:
    clocks = {"now", "utcnow", "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"}
    read: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", None) in clocks:
            read.append(arg.__name__)

    def calls(guarded: Any, steps: list[bool]) -> None:
        sys.setprofile(profile)
        try:
            for failing in steps:
                with contextlib.suppress(Boom, pybreaker.CircuitBreakerError):
                    guarded(failing)
        finally:
            sys.setprofile(None)

    def endpoint(failing: bool) -> Any:
        if failing:
            raise Boom
        return "fine"

    for listeners in ([], [Recorder()]):
        cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60, listeners=listeners)
        guarded = breaker.circuit_breaker(cb)(endpoint)
        calls(guarded, [False, True, False, True, True, False])
        assert read == []
        assert cb.current_state == pybreaker.STATE_CLOSED
    # The detector works: an open breaker must read the clock to judge its timeout.
    cb.open()
    calls(guarded, [False])
    assert read


@pytest.mark.parametrize("listeners", [0, 1])
def test_calls_do_not_wait_for_a_pybreaker_call_on_the_same_breaker(
    threads: ThreadPoolExecutor, listeners: int
) -> None:
    # pybreaker's cb.call holds the breaker's own lock while its function runs.
    cb = pybreaker.CircuitBreaker(fail_max=3, listeners=[Recorder()] * listeners)
    inside, release = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        assert release.wait(5)
        return "slow"

    theirs = threads.submit(cb.call, slow)
    assert inside.wait(5)
    try:
        guarded: breaker.BreakerEndpoint[Any, Any] = breaker.circuit_breaker(cb)(
        lambda request: request)
        failing = breaker.circuit_breaker(cb)(_raise_boom)
        assert threads.submit(guarded, 1).result(5) == 1
        with pytest.raises(Boom):
            threads.submit(failing, 2).result(5)
    finally:
        release.set()
    assert theirs.result(5) == "slow"


def test_one_breakers_listeners_never_run_two_at_a_time(threads: ThreadPoolExecutor) -> None:
    inside, release = threading.Event(), threading.Event()
    events: list[tuple[str, Any]] = []

    class Slow(pybreaker.CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            events.append(("before_call", args[0]))

        def success(self, cb: Any) -> None:
            events.append(("success", None))
            if len(events) == 2:  # the first call's success: hold it
                inside.set()
                assert release.wait(5)
            events.append(("success done", None))

    cb = pybreaker.CircuitBreaker(listeners=[Slow()])
    guarded: breaker.BreakerEndpoint[Any, Any] = breaker.circuit_breaker(cb)(
        lambda request: request)
    first = threads.submit(guarded, "first")
    assert inside.wait(5)
    second = threads.submit(guarded, "second")
    wait_futures([second], timeout=0.2)  # give an unserialised listener the chance
    assert ("before_call", "second") not in events
    release.set()
    assert (first.result(5), second.result(5)) == ("first", "second")
    assert events == [
        ("before_call", "first"), ("success", None), ("success done", None),
        ("before_call", "second"), ("success", None), ("success done", None),
    ]


def test_breakers_sharing_a_storage_share_the_state() -> None:
    # pybreaker lets several breakers (or processes, with Redis) share one storage.
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    first = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, state_storage=storage)
    second = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, state_storage=storage)
    inner = Endpoint()
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.circuit_breaker(first)(_raise_boom)(None)
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        breaker.circuit_breaker(second)(inner)(None)
    assert inner.calls == 0
    assert second.current_state == pybreaker.STATE_OPEN


def test_an_operator_steers_the_breaker_through_pybreaker() -> None:
    recorder = Recorder()
    cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, listeners=[recorder])
    inner = Endpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    cb.open()
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        guarded(1)
    assert inner.calls == 0
    cb.close()
    assert guarded(2) == ("ok", 2)
    cb.half_open()
    assert guarded(3) == ("ok", 3)  # the trial
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert [e[1:] for e in recorder.events if e[0] == "state_change"] == [
        ("closed", "open"), ("open", "closed"), ("closed", "half-open"), ("half-open", "closed"),
    ]


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
    with pytest.raises(TypeError, match=r"circuit_breaker: cb must be a pybreaker\.CircuitBreaker"):
        breaker.circuit_breaker(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", [None, 42, "http://a:1"])
def test_rejects_what_is_not_an_endpoint(endpoint: Any) -> None:
    middleware = breaker.circuit_breaker(pybreaker.CircuitBreaker())
    with pytest.raises(TypeError, match=r"endpoint must be callable"):
        middleware(endpoint)


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
    assert set(breaker.__all__) == {
        "BreakerEndpoint", "CircuitBreakerError", "CircuitOpenError", "circuit_breaker",
        "per_instance",
    }
    assert issubclass(breaker.CircuitOpenError, pybreaker.CircuitBreakerError)
    assert TRIAL_IN_PROGRESS.endswith("half-open trial in progress")


def test_no_function_shadows_a_submodule() -> None:
    # `breaker.circuit_breaker` is only the function (API.md), and so is `per_instance`.
    submodules = {module.name for module in pkgutil.iter_modules(breaker.__path__)}
    assert {"middleware", "driver_policy", "driver"} <= submodules
    assert not submodules & set(breaker.__all__)
    assert inspect.isfunction(breaker.circuit_breaker)
    assert inspect.isfunction(breaker.per_instance)
    from kitsd.breaker import circuit_breaker, per_instance  # as users write it

    assert (circuit_breaker, per_instance) == (breaker.circuit_breaker, breaker.per_instance)
