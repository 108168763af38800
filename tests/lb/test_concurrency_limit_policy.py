"""lb.concurrency_limit_policy: the gradient and AIMD limits and the admission (pure).

Besides the rules one by one, a discrete-event simulation of a service of fixed
capacity (``C`` workers, service time ``S``, an unbounded FIFO queue, Poisson
arrivals) checks what the limit is for: at 3x the capacity, goodput near the
capacity and latency near the unloaded latency, where no limit lets the queue
grow until every call times out.  bench/bench_concurrency_limit.py measures the
same against a real server.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass

import pytest

from kitsd.core.errors import MisuseError, WrongTypeError
from kitsd.lb.concurrency_limit_policy import (
    Admission,
    AIMDLimit,
    GradientLimit,
    GradientState,
    LimitPolicy,
)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"initial": 0}, "initial"),
    ({"initial": 2.5}, "initial"),
    ({"minimum": 0}, "minimum"),
    ({"maximum": True}, "maximum"),
    ({"minimum": 10, "maximum": 5, "initial": 5}, "maximum"),
    ({"minimum": 10, "initial": 5}, "initial"),
    ({"maximum": 10, "initial": 20}, "initial"),
    ({"tolerance": 0.9}, "tolerance"),
    ({"queue_size": 0}, "queue_size"),
    ({"smoothing": 0}, "smoothing"),
    ({"smoothing": 1.5}, "smoothing"),
    ({"backoff": 1.0}, "backoff"),
    ({"backoff": 0.4}, "backoff"),
    ({"probe_interval": math.inf}, "probe_interval"),
    ({"probe_time": 20.0}, "probe_time"),
    ({"window": 0}, "window"),
])
def test_bad_gradient_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        GradientLimit(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"initial": -1}, "initial"),
    ({"backoff": 1.2}, "backoff"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "1s"}, "timeout"),
])
def test_bad_aimd_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        AIMDLimit(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


# --- admission ---------------------------------------------------------------------


def test_admission_refuses_past_the_limit_and_counts() -> None:
    admission = Admission(AIMDLimit(initial=2, minimum=1, maximum=10))
    assert admission.acquire(0.0)
    assert admission.acquire(0.0)
    assert not admission.acquire(0.0)
    assert admission.in_flight == 2
    assert admission.rejected == 1
    admission.release(0.1, 0.0, "ignored")
    assert admission.in_flight == 1
    assert admission.limit == 2  # an ignored outcome moves nothing
    assert admission.acquire(0.1)
    with pytest.raises(ValueError, match="outcome"):
        admission.release(0.2, 0.0, "fine")  # type: ignore[arg-type]


def test_scale_lowers_the_limit_but_never_below_one_call() -> None:
    admission = Admission(AIMDLimit(initial=10))
    for _ in range(5):
        assert admission.acquire(0.0, scale=0.5)
    assert not admission.acquire(0.0, scale=0.5)
    empty = Admission(AIMDLimit(initial=10))
    assert empty.acquire(0.0, scale=0.0)  # one call always goes, or nothing is learnt
    assert not empty.acquire(0.0, scale=0.0)


def test_release_never_goes_below_zero() -> None:
    admission = Admission(GradientLimit())
    admission.release(1.0, 0.0, "ignored")
    assert admission.in_flight == 0


# --- AIMD ----------------------------------------------------------------------------


def test_aimd_adds_one_per_success_while_used() -> None:
    admission = Admission(AIMDLimit(initial=4, maximum=6))
    for _ in range(4):
        admission.acquire(0.0)
    admission.release(0.1, 0.0, "success")  # 4 in flight of 4: used
    assert admission.limit == 5
    admission.release(0.1, 0.0, "success")
    assert admission.limit == 6
    for _ in range(5):
        admission.acquire(0.2)
    admission.release(0.3, 0.2, "success")
    assert admission.limit == 6  # the maximum


def test_aimd_does_not_grow_when_the_callers_are_the_bottleneck() -> None:
    admission = Admission(AIMDLimit(initial=10))
    admission.acquire(0.0)
    admission.release(0.1, 0.0, "success")  # 1 in flight of 10
    assert admission.limit == 10


def test_aimd_backs_off_once_per_round() -> None:
    admission = Admission(AIMDLimit(initial=20, backoff=0.5, minimum=2))
    for _ in range(10):
        admission.acquire(0.0)
    admission.release(1.0, 0.0, "dropped")
    assert admission.limit == 10
    admission.release(1.0, 0.0, "dropped")  # admitted before the back-off: paid for
    assert admission.limit == 10
    admission.acquire(1.5)
    admission.release(2.0, 1.5, "dropped")  # a new round
    assert admission.limit == 5
    for start in (3.0, 4.0, 5.0):
        admission.acquire(start)
        admission.release(start + 0.5, start, "dropped")
    assert admission.limit == 2  # the minimum


def test_aimd_adds_one_per_round_after_its_first_back_off() -> None:
    # TCP's congestion avoidance: after the first "too many", one per round of answers
    # (1 / limit per success), not one per success (which overshoots by a round).
    admission = Admission(AIMDLimit(initial=10, backoff=0.5))
    for _ in range(10):
        admission.acquire(0.0)
    admission.release(1.0, 0.0, "dropped")
    assert admission.algorithm.limit == 5
    for _ in range(5):
        admission.acquire(1.5)
    for _ in range(5):  # a round of five answers with the limit in use: about +1
        admission.release(2.0, 1.5, "success")
    assert 5.9 < admission.algorithm.limit < 6.0  # 1/5 + 1/5.2 + ... (one each: 10)


def test_aimd_timeout_counts_as_a_drop() -> None:
    admission = Admission(AIMDLimit(initial=10, timeout=0.5))
    admission.acquire(0.0)
    admission.release(0.6, 0.0, "success")
    assert admission.limit == 9


# --- gradient ----------------------------------------------------------------------


def feed(admission: Admission, start: float, rtt: float, count: int, in_flight: int,
         dropped: bool = False) -> float:
    """``count`` calls started at ``start`` (one at a time, ``in_flight`` kept in
    flight), each answered after ``rtt``; returns the time after the last."""
    now = start
    while admission.in_flight < in_flight:
        admission.in_flight += 1  # calls already in flight (the test's stand-ins)
    for _ in range(count):
        admission.in_flight += 1
        admission.release(now + rtt, now, "dropped" if dropped else "success")
        now += rtt / 10
    return now + rtt


def test_gradient_grows_while_answers_are_fast() -> None:
    admission = Admission(GradientLimit(initial=10, queue_size=4, window=5))
    now = feed(admission, 0.0, 0.05, 5, in_flight=10)
    assert admission.limit == 14  # one round: + queue_size
    now = feed(admission, now, 0.05, 5, in_flight=14)
    assert admission.limit == 18


def test_gradient_shrinks_when_a_queue_builds() -> None:
    admission = Admission(GradientLimit(initial=40, tolerance=1.5, smoothing=0.2, window=5))
    now = feed(admission, 0.0, 0.05, 5, in_flight=40)  # baseline 50 ms
    grown = admission.limit
    for _ in range(20):
        now = feed(admission, now, 0.3, 5, in_flight=40)  # 6x slower: queueing
    assert admission.limit < grown / 2
    assert isinstance(admission.algorithm, GradientState)
    assert admission.algorithm.baseline == pytest.approx(0.05)  # a queue is no baseline


def test_gradient_does_not_grow_when_the_callers_are_the_bottleneck() -> None:
    admission = Admission(GradientLimit(initial=40, window=5))
    feed(admission, 0.0, 0.05, 50, in_flight=3)
    assert admission.limit == 40


def test_gradient_backs_off_on_a_drop() -> None:
    admission = Admission(GradientLimit(initial=40, backoff=0.5, smoothing=1.0, window=5))
    now = feed(admission, 0.0, 0.05, 5, in_flight=40)
    before = admission.algorithm.limit
    feed(admission, now, 1.0, 5, in_flight=40, dropped=True)
    assert admission.algorithm.limit == pytest.approx(before * 0.5)
    assert isinstance(admission.algorithm, GradientState)
    assert admission.algorithm.baseline == pytest.approx(0.05)  # timeouts measure nothing


def test_old_answers_do_not_move_the_limit_twice() -> None:
    admission = Admission(GradientLimit(initial=10, window=2))
    admission.in_flight = 10
    for started in (0.0, 0.01):
        admission.release(0.05 + started, started, "success")
    assert admission.limit == 14
    admission.in_flight = 10
    for _ in range(4):  # admitted before the limit moved at 0.06: a past round
        admission.release(0.07, 0.02, "success")
    assert admission.limit == 14


def test_a_probe_relearns_a_slower_service() -> None:
    gradient = GradientLimit(initial=20, window=5, probe_interval=10.0, probe_time=0.2).start()
    now = 0.0
    for _ in range(10):  # baseline 50 ms
        gradient.sample(now + 0.05, now, 0.05, 20, dropped=False)
        now += 0.005
    assert gradient.baseline == pytest.approx(0.05)
    # The service gets 3x slower for good (a new release): no answer confirms 50 ms,
    # and the limit falls as if a queue had built.
    while gradient.effective(now) == gradient.limit and now < 20.0:
        gradient.sample(now + 0.15, now, 0.15, int(gradient.limit), dropped=False)
        now += 0.01
    shrunk = gradient.limit
    # the probe started one interval after the baseline was last confirmed
    assert 10.0 < now < 10.2
    assert gradient.baseline is None  # the probe's calls set it afresh
    assert gradient.effective(now) == pytest.approx(shrunk / 2)
    assert gradient.probing(now)
    gradient.sample(now + 0.3, now - 0.1, 0.4, 9, dropped=False)  # from before: ignored
    gradient.sample(now + 0.16, now + 0.01, 0.15, 5, dropped=False)  # a call of the probe
    assert gradient.baseline == pytest.approx(0.15)
    later = now + 1.0
    assert not gradient.probing(later)
    assert gradient.effective(later) == gradient.limit == shrunk
    for _ in range(20):  # and the limit grows again at the new speed
        gradient.sample(later + 0.15, later, 0.15, int(gradient.limit), dropped=False)
        later += 0.01
    assert gradient.limit > shrunk


def test_no_probe_while_answers_confirm_the_baseline() -> None:
    admission = Admission(GradientLimit(initial=20, window=5, probe_interval=1.0))
    gradient = admission.algorithm
    assert isinstance(gradient, GradientState)
    now = 0.0
    while now < 5.0:
        now = feed(admission, now, 0.05, 5, in_flight=20)
        assert not gradient.probing(now)
        admission.acquire(now)
        admission.in_flight -= 1


# --- the simulation ----------------------------------------------------------------


@dataclass
class Run:
    goodput: float  # answers within the timeout per second, after the warm-up
    p99: float  # of those answers, seconds
    rejected: int
    timed_out: int


def simulate(policy: LimitPolicy | None, *, capacity: int = 16, service: float = 0.05,
             load: float = 3.0, seconds: float = 30.0, warm_up: float = 5.0,
             timeout: float = 1.0, seed: int = 1) -> Run:
    """Poisson arrivals at ``load`` x capacity on a service of ``capacity`` workers
    taking ``service`` seconds (+-10 %) each, with an unbounded queue."""
    rng = random.Random(seed)
    rate = load * capacity / service
    admission = Admission(policy) if policy is not None else None
    events: list[tuple[float, int, float]] = [(rng.expovariate(rate), 0, -1.0)]
    sequence = 1
    busy, queue = 0, []
    latencies, rejected, timed_out = [], 0, 0

    def serve(now: float, started: float) -> None:
        nonlocal sequence
        heapq.heappush(events, (now + service * (0.9 + 0.2 * rng.random()), sequence, started))
        sequence += 1

    while events:
        now, _, started = heapq.heappop(events)
        if now > seconds:
            break
        if started < 0:  # an arrival
            heapq.heappush(events, (now + rng.expovariate(rate), sequence, -1.0))
            sequence += 1
            if admission is not None and not admission.acquire(now):
                rejected += 1
                continue
            if busy < capacity:
                busy += 1
                serve(now, now)
            else:
                queue.append(now)
            continue
        if queue:  # an answer: the next queued call starts
            serve(now, queue.pop(0))
        else:
            busy -= 1
        late = now - started > timeout
        timed_out += late
        if not late and now > warm_up:
            latencies.append(now - started)
        if admission is not None:
            admission.release(now, started, "dropped" if late else "success")
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else math.inf
    return Run(len(latencies) / (seconds - warm_up), p99, rejected, timed_out)


@pytest.mark.parametrize("capacity", [16, 64])
def test_at_three_times_capacity_the_gradient_keeps_goodput_and_latency(capacity: int) -> None:
    service = 0.05
    unloaded = simulate(None, capacity=capacity, service=service, load=0.3)
    flooded = simulate(None, capacity=capacity, service=service, load=3.0)
    limited = simulate(GradientLimit(), capacity=capacity, service=service, load=3.0)
    full = capacity / service
    assert flooded.goodput < 0.1 * full  # without a limit the queue eats everything
    assert limited.goodput >= 0.9 * full
    assert limited.timed_out == 0
    assert limited.p99 <= 2.0 * unloaded.p99
    assert limited.rejected > 0  # the excess was refused, fast


@pytest.mark.parametrize("capacity", [16, 64])
def test_aimd_with_a_timeout_keeps_goodput_and_latency(capacity: int) -> None:
    # A timeout of twice the no-load latency; the increase per round keeps the queue
    # short (one per success: p99 3.2x).
    unloaded = simulate(None, capacity=capacity, service=0.05, load=0.3)
    limited = simulate(AIMDLimit(timeout=0.1), capacity=capacity, service=0.05, load=3.0)
    assert limited.goodput >= 0.9 * capacity / 0.05
    assert limited.timed_out == 0
    assert limited.p99 <= 2.0 * unloaded.p99


def test_aimd_without_a_timeout_does_not_see_a_queue() -> None:
    # What the docstring says: a service that queues rather than sheds is left to
    # the deadline (the gradient limit is the one for it).
    unloaded = simulate(None, capacity=16, service=0.05, load=0.3)
    limited = simulate(AIMDLimit(), capacity=16, service=0.05, load=3.0)
    assert limited.p99 > 5.0 * unloaded.p99


def test_under_capacity_nothing_is_refused() -> None:
    limited = simulate(GradientLimit(), capacity=16, service=0.05, load=0.5)
    assert limited.rejected == 0
