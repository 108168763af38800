"""lb.retry and lb.retry_async: go-kit's retry_test.go scenarios and kitsd's additions.

Every scenario that applies to both drivers runs against both: the ``driver``
fixture hands out endpoints of the right kind (the async ones suspend once
before doing the scenario's work) and a plain callable that runs one retried call
(for asyncio, on one event loop kept for the whole test, so that anything a call
leaks into the context would be visible to the next).  Thread and sync-deadline
scenarios are below them; asyncio-only ones (cancellation, tasks left behind,
an Endpointer over a MemoryRegistry) are in ``test_retry_async.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import tenacity

from kitsd import lb, sd
from kitsd.core.endpoint import Endpoint
from tests.helpers import wait_for

Call = Callable[[Any], Any]


class Static:
    """The smallest endpoint source: a fixed list (go-kit's ``FixedEndpointer``)."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)


class Driver:
    """Runs scenarios on the sync driver; :class:`AsyncDriver` on asyncio."""

    name = "sync"

    def endpoint(self, work: Call) -> Endpoint:
        """An endpoint that does ``work(request)``."""

        def endpoint(request: Any) -> Any:
            return work(request)

        return endpoint

    def retry(self, max_attempts: int, timeout: float, balancer: lb.Balancer,
              **options: Any) -> Call:
        """``lb.retry(...)`` as a plain callable."""
        return cast(Call, lb.retry(max_attempts, timeout, balancer, **options))

    def probe(self, read: Callable[[], Any]) -> Any:
        """``read()`` in the context the next call will run in."""
        return read()


class AsyncDriver(Driver):
    name = "async"

    def __init__(self, runner: asyncio.Runner) -> None:
        self._runner = runner

    def endpoint(self, work: Call) -> Endpoint:
        async def endpoint(request: Any) -> Any:
            await asyncio.sleep(0)
            return work(request)

        return endpoint

    def retry(self, max_attempts: int, timeout: float, balancer: lb.Balancer,
              **options: Any) -> Call:
        retrying = lb.retry_async(max_attempts, timeout, balancer, **options)

        async def call(request: Any) -> Any:
            return await retrying(request)

        return lambda request: self._runner.run(call(request))

    def probe(self, read: Callable[[], Any]) -> Any:
        async def probe() -> Any:
            return read()

        return self._runner.run(probe())


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    if request.param == "sync":
        yield Driver()
        return
    with asyncio.Runner() as runner:
        yield AsyncDriver(runner)


class Touches:
    """Endpoints that count how often they were called and can be made to fail."""

    def __init__(self, driver: Driver, names: str) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: dict[str, Callable[[Any], BaseException] | None] = dict.fromkeys(names)
        self.endpoints = [driver.endpoint(self._work(name)) for name in names]
        self.by_name = dict(zip(names, self.endpoints, strict=True))

    def _work(self, name: str) -> Call:
        def work(request: Any) -> Any:
            self.counts[name] += 1
            failure = self.failures[name]
            if failure is not None:
                raise failure(request)
            return name

        return work

    def fail(self, name: str, error: type[BaseException] | None) -> None:
        """Make ``name`` raise a fresh ``error(f"{name} failed")`` (``None``: succeed)."""
        self.failures[name] = None if error is None else (lambda request: error(f"{name} failed"))

    def source(self) -> Static:
        return Static(self.endpoints)


def raising(error: BaseException) -> Call:
    def work(request: Any) -> Any:
        raise error

    return work


def script(*outcomes: BaseException | str) -> Call:
    """Work that goes through ``outcomes`` in order, whichever endpoint runs it."""
    steps = iter(outcomes)

    def work(request: Any) -> Any:
        outcome = next(steps)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return work


# --- go-kit's retry_test.go -------------------------------------------------------------


def test_max_total_fail(driver: Driver) -> None:
    # TestRetryMaxTotalFail: no endpoints at all; every attempt fails.
    retrying = driver.retry(10, 1.0, lb.RoundRobin(Static([])))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert len(info.value.errors) == 10
    assert all(isinstance(error, lb.NoEndpointsError) for error in info.value.errors)
    assert info.value.final is info.value.errors[-1]


def test_max_total_fail_from_endpoints(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    for name in "abc":
        touches.fail(name, ValueError)
    retrying = driver.retry(5, 1.0, lb.RoundRobin(touches.source()))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert len(info.value.errors) == 5
    assert sum(touches.counts.values()) == 5


def test_max_partial_fail(driver: Driver) -> None:
    # TestRetryMaxPartialFail: "error one", "error two", then OK — with one attempt too few.
    work = script(ValueError("error one"), ValueError("error two"), "OK")
    endpoints = [driver.endpoint(work) for _ in range(3)]
    retrying = driver.retry(2, 1.0, lb.RoundRobin(Static(endpoints)))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert [str(error) for error in info.value.errors] == ["error one", "error two"]
    assert str(info.value) == "error two (previously: error one)"


def test_max_success(driver: Driver) -> None:
    # TestRetryMaxSuccess: exactly enough attempts.
    work = script(ValueError("error one"), ValueError("error two"), "OK")
    endpoints = [driver.endpoint(work) for _ in range(3)]
    retrying = driver.retry(3, 1.0, lb.RoundRobin(Static(endpoints)))
    assert retrying("request") == "OK"


def test_abort_early_custom_message(driver: Driver) -> None:
    # TestAbortEarlyCustomMessage
    class MyError(Exception):
        pass

    mine = MyError("aborting early")
    retrying = driver.retry(999, 1.0, lb.RoundRobin(Static([])),
                            callback=lambda attempt, error: (False, mine))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert info.value.final is mine
    assert str(info.value).startswith("aborting early")
    assert len(info.value.errors) == 1
    assert isinstance(info.value.errors[0], lb.NoEndpointsError)


def test_error_passed_unchanged_to_callback(driver: Driver) -> None:
    # TestErrorPassedUnchangedToCallback
    mine = ValueError("my custom error")
    seen: list[BaseException] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        seen.append(error)
        return False, None

    endpoint = driver.endpoint(raising(mine))
    retrying = driver.retry(999, 1.0, lb.RoundRobin(Static([endpoint])), callback=callback)
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert len(seen) == 1
    assert seen[0] is mine
    assert info.value.final is mine
    assert info.value.errors[0] is mine


def test_handle_nil_callback(driver: Driver) -> None:
    # TestHandleNilCallback
    endpoint = driver.endpoint(lambda request: ("ok", request))
    retrying = driver.retry(3, 1.0, lb.RoundRobin(Static([endpoint])), callback=None)
    assert retrying(42) == ("ok", 42)


def test_callback_counts_attempts(driver: Driver) -> None:
    attempts: list[int] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        attempts.append(attempt)
        return attempt < 4, None

    touches = Touches(driver, "a")
    touches.fail("a", ValueError)
    retrying = driver.retry(10, 1.0, lb.RoundRobin(touches.source()), callback=callback)
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert attempts == [1, 2, 3, 4]
    assert touches.counts["a"] == 4
    assert len(info.value.errors) == 4


def test_callback_can_keep_going_after_errors_then_succeed(driver: Driver) -> None:
    work = script(ValueError("1"), ValueError("2"), "third time lucky")
    endpoint = driver.endpoint(work)
    attempts: list[int] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        attempts.append(attempt)
        return True, None

    retrying = driver.retry(1, 1.0, lb.RoundRobin(Static([endpoint])), callback=callback)
    assert retrying("request") == "third time lucky"
    assert attempts == [1, 2]


# --- settings ---------------------------------------------------------------------------


def test_one_attempt_means_no_retry(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    for name in "abc":
        touches.fail(name, ValueError)
    retrying = driver.retry(1, 1.0, lb.RoundRobin(touches.source()))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert sum(touches.counts.values()) == 1
    assert str(info.value) == "a failed"


@pytest.mark.parametrize(
    ("max_attempts", "timeout", "error"),
    [
        (0, 1.0, ValueError),
        (-1, 1.0, ValueError),
        (3, 0, ValueError),
        (3, -1.0, ValueError),
        (3, math.nan, ValueError),
        (2.0, 1.0, TypeError),
        ("3", 1.0, TypeError),
    ],
)
def test_rejects_unusable_settings(
    driver: Driver, max_attempts: Any, timeout: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        driver.retry(max_attempts, timeout, lb.RoundRobin(Static([])))


def test_rejects_a_wait_that_is_not_callable(driver: Driver) -> None:
    with pytest.raises(TypeError):
        driver.retry(3, 1.0, lb.RoundRobin(Static([])), wait=0.5)


@pytest.mark.parametrize("timeout", [math.inf, -math.inf])
def test_rejects_an_infinite_timeout_at_construction(driver: Driver, timeout: float) -> None:
    # Issue 7.9: an infinite timeout was accepted and every sync call then failed
    # with OverflowError.
    with pytest.raises(sd.MisuseError, match="timeout"):
        driver.retry(3, timeout, lb.RoundRobin(Static([])))


@pytest.mark.parametrize("balancer", [None, 5, Static([])])
def test_rejects_a_balancer_without_endpoint_at_construction(
    driver: Driver, balancer: Any
) -> None:
    # Issue 7.9: balancer=None was accepted; every call then failed inside the retry.
    with pytest.raises(TypeError, match="balancer"):
        driver.retry(3, 1.0, balancer)


@pytest.mark.parametrize("callback", [5, "stop"])
def test_rejects_a_callback_that_is_not_callable(driver: Driver, callback: Any) -> None:
    with pytest.raises(TypeError, match="callback"):
        driver.retry(3, 1.0, lb.RoundRobin(Static([])), callback=callback)


def test_value_errors_are_misuse_errors(driver: Driver) -> None:
    with pytest.raises(sd.MisuseError, match="max_attempts"):
        driver.retry(0, 1.0, lb.RoundRobin(Static([])))


# --- what counts as an attempt, and what the caller sees -----------------------------------


def test_balancer_errors_count_as_attempts(driver: Driver) -> None:
    endpoint = driver.endpoint(lambda request: "ok")

    class Flaky:
        """A balancer with nothing to give on its first ask."""

        asks = 0

        def endpoint(self) -> Endpoint:
            self.asks += 1
            if self.asks == 1:
                raise lb.NoEndpointsError
            return endpoint

    seen: list[tuple[int, type[BaseException]]] = []

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        seen.append((attempt, type(error)))
        return attempt < 2, None

    assert driver.retry(2, 1.0, Flaky(), callback=callback)("request") == "ok"
    assert seen == [(1, lb.NoEndpointsError)]
    with pytest.raises(lb.RetryError) as info:
        driver.retry(1, 1.0, Flaky())("request")
    assert isinstance(info.value.final, lb.NoEndpointsError)


def test_endpointer_error_counts_and_passes_through(driver: Driver) -> None:
    now = [0.0]
    broadcaster = sd.Broadcaster(sd.Event(("10.0.0.1:80",)))

    def factory(instance: str) -> Endpoint:
        return driver.endpoint(lambda request: instance)

    with sd.InstancerHandle(broadcaster) as instancer, sd.Endpointer(
        instancer, factory, invalidate_on_error=1.0, clock=lambda: now[0]
    ) as endpointer:
        retrying = driver.retry(3, 1.0, lb.RoundRobin(endpointer))
        assert retrying("request") == "10.0.0.1:80"
        boom = sd.RegistryUnavailableError("registry down")
        broadcaster.publish_error(boom)
        now[0] = 2.0
        with pytest.raises(lb.RetryError) as info:
            retrying("request")
        assert len(info.value.errors) == 3
        assert all(error is boom for error in info.value.errors)


def test_endpoint_timeout_error_is_an_ordinary_failure(driver: Driver) -> None:
    # An endpoint's own TimeoutError is not the retry's deadline.
    endpoint = driver.endpoint(raising(TimeoutError("upstream was slow")))
    retrying = driver.retry(2, 5.0, lb.RoundRobin(Static([endpoint])))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert not isinstance(info.value, lb.RetryTimeout)
    assert [type(error) for error in info.value.errors] == [TimeoutError, TimeoutError]


class Abort(BaseException):
    """Not an ``Exception``: like KeyboardInterrupt, it must not be retried."""


def test_base_exceptions_are_not_retried(driver: Driver) -> None:
    touches = Touches(driver, "ab")
    touches.fail("a", Abort)
    retrying = driver.retry(3, 1.0, lb.RoundRobin(touches.source()))
    with pytest.raises(Abort):
        retrying("request")
    assert touches.counts == Counter(a=1)
    assert driver.probe(lb.remaining) is None


def test_remaining_inside_and_outside(driver: Driver) -> None:
    seen: list[float | None] = []

    def work(request: Any) -> Any:
        seen.append(lb.remaining())
        if request == "fail":
            raise ValueError("no")
        return "ok"

    endpoint = driver.endpoint(work)
    retrying = driver.retry(2, 3.0, lb.RoundRobin(Static([endpoint])))
    assert driver.probe(lb.remaining) is None
    assert retrying("ok") == "ok"
    assert driver.probe(lb.remaining) is None
    with pytest.raises(lb.RetryError):
        retrying("fail")
    assert driver.probe(lb.remaining) is None
    lefts = [left for left in seen if isinstance(left, float)]
    assert len(lefts) == len(seen) == 3
    for left in lefts:
        assert 2.0 < left <= 3.0
    assert lefts[2] <= lefts[1]  # the same deadline covers both attempts of a call


def test_nothing_about_a_call_leaks_into_the_next(driver: Driver) -> None:
    touches = Touches(driver, "ab")
    touches.fail("a", ValueError)
    retrying = driver.retry(2, 1.0, lb.RoundRobin(touches.source()))
    assert retrying("request") == "b"
    touches.fail("a", None)
    # a failed last call (a ValueError does not eject), so it is fair game now.
    assert {retrying("request") for _ in range(4)} == {"a", "b"}


@pytest.mark.parametrize("how", ["max_attempts", "callback", "callback raises"])
def test_giving_up_on_the_first_failure_leaves_nothing_behind(driver: Driver, how: str) -> None:
    touches = Touches(driver, "ab")
    touches.fail("a", ValueError)

    def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        if how == "callback raises":
            raise RuntimeError("callback broke")
        return False, None

    options: dict[str, Any] = {} if how == "max_attempts" else {"callback": callback}
    retrying = driver.retry(1 if how == "max_attempts" else 5, 1.0,
                            lb.RoundRobin(touches.source()), **options)
    for _ in range(3):
        with pytest.raises((lb.RetryError, RuntimeError)):
            retrying("request")  # a, which fails and ends the call at once
        assert retrying("request") == "b"
        assert driver.probe(lb.remaining) is None
    assert touches.counts == Counter(a=3, b=3)  # a stays a candidate for later calls


# --- wait -----------------------------------------------------------------------------


def test_wait_fixed_between_attempts(driver: Driver) -> None:
    touches = Touches(driver, "ab")
    for name in "ab":
        touches.fail(name, ValueError)
    retrying = driver.retry(4, 5.0, lb.RoundRobin(touches.source()),
                            wait=tenacity.wait_fixed(0.05))
    start = time.monotonic()
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    elapsed = time.monotonic() - start
    assert len(info.value.errors) == 4
    assert elapsed >= 0.05 * 3 - 0.002  # allow for clock granularity only


def test_wait_past_the_deadline_gives_up_at_once(driver: Driver) -> None:
    endpoint = driver.endpoint(raising(ValueError("down")))
    retrying = driver.retry(5, 0.5, lb.RoundRobin(Static([endpoint])),
                            wait=tenacity.wait_fixed(10))
    start = time.monotonic()
    with pytest.raises(lb.RetryTimeout) as info:
        retrying("request")
    elapsed = time.monotonic() - start
    assert elapsed < 0.5  # neither the 10 s wait nor even the 0.5 s timeout was waited out
    assert [str(error) for error in info.value.errors] == ["down"]


def test_wait_that_fits_then_one_that_does_not(driver: Driver) -> None:
    endpoint = driver.endpoint(raising(ValueError("down")))
    retrying = driver.retry(5, 0.3, lb.RoundRobin(Static([endpoint])),
                            wait=tenacity.wait_fixed(0.2))
    start = time.monotonic()
    with pytest.raises(lb.RetryTimeout) as info:
        retrying("request")
    elapsed = time.monotonic() - start
    assert len(info.value.errors) == 2
    assert 0.2 - 0.002 <= elapsed < 0.4  # the second wait would have ended at 0.4


def test_wait_strategy_sees_attempt_number_and_error(driver: Driver) -> None:
    raised = [ValueError(f"failure {n}") for n in range(1, 4)]
    endpoint = driver.endpoint(script(*raised, "ok"))
    seen: list[tuple[int, BaseException | None]] = []

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        seen.append((state.attempt_number, state.outcome.exception()))
        return 0.0

    retrying = driver.retry(4, 5.0, lb.RoundRobin(Static([endpoint])), wait=wait)
    assert retrying("request") == "ok"
    assert [attempt for attempt, _ in seen] == [1, 2, 3]
    assert all(got is sent for (_, got), sent in zip(seen, raised, strict=True))


def test_tenacity_exponential_wait_is_used(driver: Driver) -> None:
    endpoint = driver.endpoint(script(ValueError("1"), ValueError("2"), "ok"))
    retrying = driver.retry(3, 5.0, lb.RoundRobin(Static([endpoint])),
                            wait=tenacity.wait_exponential(multiplier=0.02, max=1))
    start = time.monotonic()
    assert retrying("request") == "ok"
    assert time.monotonic() - start >= 0.02 + 0.04 - 0.002


def test_plain_wait_sees_attempt_error_and_elapsed(driver: Driver) -> None:
    raised = [ValueError(f"failure {n}") for n in range(1, 4)]
    endpoint = driver.endpoint(script(*raised, "ok"))
    seen: list[tuple[int, BaseException, float]] = []

    def wait(attempt: int, error: BaseException, elapsed: float) -> float:
        seen.append((attempt, error, elapsed))
        return 0.02

    retrying = driver.retry(4, 5.0, lb.RoundRobin(Static([endpoint])), wait=wait)
    start = time.monotonic()
    assert retrying("request") == "ok"
    assert time.monotonic() - start >= 3 * 0.02 - 0.002  # every wait was slept
    assert [attempt for attempt, _, _ in seen] == [1, 2, 3]
    assert all(got is sent for (_, got, _), sent in zip(seen, raised, strict=True))
    elapsed = [seconds for _, _, seconds in seen]
    assert elapsed == sorted(elapsed)
    assert elapsed[2] >= 2 * 0.02 - 0.002  # since the call began, the waits included


def test_a_wait_of_neither_form_is_refused(driver: Driver) -> None:
    balancer = lb.RoundRobin(Static([driver.endpoint(lambda request: "ok")]))
    with pytest.raises(TypeError, match="wait"):
        driver.retry(2, 1.0, balancer, wait=0.5)
    with pytest.raises(TypeError, match="wait"):
        driver.retry(2, 1.0, balancer, wait=lambda attempt, error: 0.0)


# --- per-call exclusion ------------------------------------------------------------------


def make_balancer(kind: str, source: Static) -> lb.Balancer:
    return lb.RoundRobin(source) if kind == "round_robin" else lb.Random(source, seed=2024)


@pytest.mark.parametrize("kind", ["round_robin", "random"])
def test_a_failed_instance_is_not_picked_again_in_the_same_call(driver: Driver, kind: str) -> None:
    touches = Touches(driver, "abc")
    touches.fail("b", ValueError)  # not a connection failure: no ejection, only exclusion
    retrying = driver.retry(2, 5.0, make_balancer(kind, touches.source()))
    for _ in range(60):
        before = touches.counts["b"]
        assert retrying("request") in {"a", "c"}
        assert touches.counts["b"] - before <= 1
    assert touches.counts["b"] > 0  # b stays in rotation between calls
    assert touches.counts["a"] > 0
    assert touches.counts["c"] > 0


@pytest.mark.parametrize("kind", ["round_robin", "random"])
def test_every_instance_is_tried_once_before_any_twice(driver: Driver, kind: str) -> None:
    touches = Touches(driver, "abc")
    for name in "abc":
        touches.fail(name, ValueError)
    retrying = driver.retry(3, 5.0, make_balancer(kind, touches.source()))
    for call in range(1, 21):
        with pytest.raises(lb.RetryError) as info:
            retrying("request")
        assert sorted(str(error) for error in info.value.errors) == [
            "a failed", "b failed", "c failed"
        ]
        assert touches.counts == Counter(a=call, b=call, c=call)
    # With more attempts than instances, instances are tried again once all have failed.
    with pytest.raises(lb.RetryError) as info:
        driver.retry(5, 5.0, make_balancer(kind, touches.source()))("request")
    assert len(info.value.errors) == 5


def test_custom_balancer_is_re_asked(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("a", ValueError)

    class WeightedCycle:
        """A user's balancer that does not use lb.pick: a weighted cycle, two slots each."""

        def __init__(self, endpoints: list[Endpoint]) -> None:
            self._cycle = itertools.cycle([e for e in endpoints for _ in range(2)])
            self.asks = 0

        def endpoint(self) -> Endpoint:
            self.asks += 1
            return next(self._cycle)

    balancer = WeightedCycle(touches.endpoints)
    retrying = driver.retry(3, 5.0, balancer)
    # The cycle hands out a, a: a naive retry would call the failed a twice.
    assert retrying("request") == "b"
    assert touches.counts == Counter(a=1, b=1)
    assert balancer.asks == 3


def test_plain_custom_balancer_works(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("a", ValueError)

    class Cycle:
        def __init__(self, endpoints: list[Endpoint]) -> None:
            self._cycle = itertools.cycle(endpoints)

        def endpoint(self) -> Endpoint:
            return next(self._cycle)

    retrying = driver.retry(3, 5.0, Cycle(touches.endpoints))
    assert [retrying("request") for _ in range(4)] == ["b", "c", "b", "c"]
    assert touches.counts == Counter(a=2, b=2, c=2)


@pytest.mark.parametrize("error", [ValueError, ConnectionRefusedError])
def test_a_single_instance_is_retried(driver: Driver, error: type[Exception]) -> None:
    touches = Touches(driver, "a")
    touches.fail("a", error)
    retrying = driver.retry(4, 5.0, lb.RoundRobin(touches.source()))
    with pytest.raises(lb.RetryError) as info:
        retrying("request")
    assert touches.counts["a"] == 4
    assert [type(e) for e in info.value.errors] == [error] * 4


# --- passive ejection ----------------------------------------------------------------------


def ejecting(base: float = 1.0, maximum: float = 30.0) -> lb.OutlierDetection:
    return lb.OutlierDetection(base_ejection_time=base, max_ejection_time=maximum)


def test_connection_failure_ejects_for_later_calls(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("b", ConnectionRefusedError)
    balancer = lb.RoundRobin(touches.source(), outlier_detection=ejecting(30.0, 60.0))
    retrying = driver.retry(3, 5.0, balancer)
    assert retrying("request") == "a"
    assert retrying("request") in {"a", "c"}  # b refused; the retry went elsewhere
    assert touches.counts["b"] == 1
    answers = Counter(retrying("request") for _ in range(30))
    assert touches.counts["b"] == 1
    assert set(answers) == {"a", "c"}
    assert len(balancer.ejected()) == 1


def test_other_errors_do_not_eject(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("b", ValueError)
    balancer = lb.RoundRobin(touches.source())
    retrying = driver.retry(3, 5.0, balancer)
    for _ in range(9):
        retrying("request")
    assert touches.counts["b"] >= 3  # still tried on later calls
    assert balancer.ejected() == []


def test_ejection_is_capped(driver: Driver) -> None:
    touches = Touches(driver, "ab")
    for name in "ab":
        touches.fail(name, ConnectionRefusedError)
    balancer = lb.RoundRobin(touches.source())
    retrying = driver.retry(2, 5.0, balancer)
    for call in range(1, 6):
        with pytest.raises(lb.RetryError) as info:
            retrying("request")
        # Both refused, and still both are reached on every call.
        assert touches.counts == Counter(a=call, b=call)
        assert all(isinstance(e, ConnectionRefusedError) for e in info.value.errors)
    assert len(balancer.ejected()) == 1  # half of two
    single = driver.retry(1, 5.0, balancer)
    with pytest.raises(lb.RetryError) as info:
        single("request")
    assert isinstance(info.value.final, ConnectionRefusedError)  # not NoEndpointsError


def test_ejection_expires(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("b", ConnectionRefusedError)
    retrying = driver.retry(3, 5.0, lb.RoundRobin(touches.source(),
                                                  outlier_detection=ejecting(0.05, 0.05)))
    while touches.counts["b"] == 0:
        retrying("request")
    touches.fail("b", None)

    def b_answers() -> bool:
        return bool(retrying("request") == "b")

    wait_for(b_answers, timeout=5.0, what="b back in rotation")
    assert touches.counts["b"] == 2


def ejection_times(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The durations of the ejections the balancers logged."""
    return [float(cast(tuple[str, float, str], record.args)[1]) for record in caplog.records
            if record.name == "kitsd.lb.pool" and str(record.msg).startswith("ejected")]


@pytest.mark.parametrize(("succeeds_in_between", "second"), [(True, 0.05), (False, 0.1)])
def test_success_clears_strikes(driver: Driver, succeeds_in_between: bool, second: float,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="kitsd.lb.pool")
    touches = Touches(driver, "ab")
    touches.fail("b", ConnectionRefusedError)
    retrying = driver.retry(2, 5.0, lb.RoundRobin(touches.source(),
                                                  outlier_detection=ejecting(0.05, 5.0)))
    while touches.counts["b"] == 0:
        retrying("request")
    assert ejection_times(caplog) == [0.05]
    if succeeds_in_between:
        touches.fail("b", None)
        wait_for(lambda: retrying("request") == "b", what="b back in rotation")
        touches.fail("b", ConnectionRefusedError)

    def refused_again() -> bool:
        retrying("request")
        return len(ejection_times(caplog)) == 2

    wait_for(refused_again, what="b refusing again")
    assert ejection_times(caplog) == [0.05, second]


def test_none_disables_ejection(driver: Driver) -> None:
    touches = Touches(driver, "abc")
    touches.fail("b", ConnectionRefusedError)
    balancer = lb.RoundRobin(touches.source(), outlier_detection=None)
    retrying = driver.retry(3, 5.0, balancer)
    for _ in range(9):
        assert retrying("request") in {"a", "c"}
    assert touches.counts["b"] >= 3
    assert balancer.outlier_detection is None
    assert balancer.ejected() == []


# --- sync only: deadlines and threads -----------------------------------------------------


def test_timeout_sync() -> None:
    # TestRetryTimeout: a sync endpoint cannot be interrupted, so it bounds its own wait
    # for a reply by lb.remaining(); a reply that never comes becomes a RetryTimeout.
    reply = threading.Event()

    def endpoint(request: Any) -> Any:
        left = lb.remaining()
        assert left is not None
        if not reply.wait(left):
            raise TimeoutError("no reply")
        return "reply"

    retrying = lb.retry(999, 0.1, lb.RoundRobin(Static([endpoint])))
    reply.set()
    assert retrying("request") == "reply"
    reply.clear()
    start = time.monotonic()
    with pytest.raises(lb.RetryTimeout) as info:
        retrying("request")
    elapsed = time.monotonic() - start
    assert 0.1 <= elapsed < 1.0
    assert info.value.errors
    assert all(str(error) == "no reply" for error in info.value.errors)
    assert info.value.timeout == 0.1
    assert lb.remaining() is None


def test_sync_success_after_the_deadline_is_returned() -> None:
    # Documented: the sync driver cannot interrupt an endpoint; a late success stands.
    def endpoint(request: Any) -> Any:
        wait_for(lambda: lb.remaining() == 0.0, timeout=5.0, what="deadline to pass")
        return "late"

    assert lb.retry(3, 0.05, lb.RoundRobin(Static([endpoint])))("request") == "late"


def test_many_threads_no_cross_talk(no_thread_leaks: None) -> None:
    threads_n, calls_n = 8, 250
    observed: list[tuple[int, float, float | None]] = []
    problems: list[str] = []

    def make(name: str) -> Endpoint:
        def endpoint(request: tuple[int, int, float]) -> tuple[str, int, int]:
            thread, i, timeout = request
            observed.append((thread, timeout, lb.remaining()))
            if i % 5 == 0:
                raise ValueError(f"{name} poison {thread}/{i}")
            if name == "b" and i % 2:
                raise ConnectionResetError(f"{name} flaky {thread}/{i}")
            return name, thread, i

        return endpoint

    # No ejection: b stays in rotation, this test is about cross-talk.
    balancer = lb.RoundRobin(Static([make(name) for name in "abc"]), outlier_detection=None)
    barrier = threading.Barrier(threads_n)

    def worker(thread: int) -> None:
        timeout = 10.0 * (thread + 1)
        retrying = lb.retry(3, timeout, balancer)
        barrier.wait()
        for i in range(calls_n):
            try:
                response = retrying((thread, i, timeout))
            except lb.RetryError as error:
                names = sorted(str(e).split()[0] for e in error.errors)
                if i % 5 or names != ["a", "b", "c"]:
                    problems.append(f"{thread}/{i}: unexpected {error!r}")
                if any(not str(e).endswith(f" {thread}/{i}") for e in error.errors):
                    problems.append(f"{thread}/{i}: someone else's error in {error!r}")
            except BaseException as error:  # reported to the test below
                problems.append(f"{thread}/{i}: {error!r}")
            else:
                if i % 5 == 0 or response[1:] != (thread, i):
                    problems.append(f"{thread}/{i}: wrong response {response!r}")
            if lb.remaining() is not None:
                problems.append(f"{thread}/{i}: remaining() set after the call")

    threads = [threading.Thread(target=worker, args=(n,), name=f"retry-{n}")
               for n in range(threads_n)]
    for started in threads:
        started.start()
    for started in threads:
        started.join()
    assert problems == []
    assert len({number for number, _, _ in observed}) == threads_n
    for number, timeout, left in observed:
        # Each thread's deadline is 10 s from its neighbours': any cross-talk shows.
        assert left is not None
        assert timeout - 5.0 < left <= timeout, (number, timeout, left)
